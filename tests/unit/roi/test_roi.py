"""ROI extraction from a label slice: components, boxes, RLE masks, organ context, texture words."""

import numpy as np
import pytest

from medtrinity_tasks.preprocess.images import encode_png
from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.roi.descriptors import describe_texture, surrounding_ring
from medtrinity_tasks.sources.catalog import get_source


def slice_row(labels: np.ndarray, pixels: np.ndarray) -> dict:
    height, width = labels.shape
    return {
        "source_id": "synthetic_ct_abdomen",
        "source_relpath": "imagesTr/x.nii.gz",
        "id": "x",
        "width": width,
        "height": height,
        "patient_orientation": ["L", "P"],
        "spacing_mm": [0.75, 0.75, 5.0],
        "image": {"bytes": encode_png(pixels), "path": "x.png"},
        "label_slice": labels.astype("<u2").tobytes(),
    }


@pytest.fixture
def described():
    labels = np.zeros((100, 120), dtype=np.uint16)
    pixels = np.full((100, 120), 100, dtype=np.uint8)
    labels[10:60, 5:55] = 1  # liver on the image left: the patient's right
    labels[20:30, 15:27] = 2  # a liver tumour, 10 x 12 px
    pixels[20:30, 15:27] = 40  # darker than the liver around it
    labels[70:90, 90:110] = 4  # kidney on the image right, posterior
    labels[75:80, 95:99] = 5  # a renal cyst, 5 x 4 px
    pixels[75:80, 95:99] = 30
    labels[95, 0] = 2  # a one-pixel speck: not a region
    source = get_source("synthetic_ct_abdomen")
    return AnnotationRois(source).process_batch([slice_row(labels, pixels)])[0], labels


def test_each_lesion_component_becomes_one_described_roi(described):
    row, labels = described
    rois = {roi["label"]: roi for roi in row["rois"]}
    assert set(rois) == {"liver tumour", "renal cyst"}  # the speck is dropped
    tumour, cyst = rois["liver tumour"], rois["renal cyst"]
    assert tumour["bbox_xyxy"] == [15.0, 20.0, 27.0, 30.0]
    assert tumour["area_fraction"] == pytest.approx(120 / 12000)
    assert tumour["centroid_xy"] == pytest.approx([20.5, 24.5])
    expected = np.zeros_like(labels, dtype=bool)
    expected[20:30, 15:27] = True  # this component only: not the speck of the same label
    assert np.array_equal(rle.decode(tumour["mask_rle"]), expected)
    assert tumour["location"] == "right anterior abdomen, within the liver"
    assert cyst["location"] == "left posterior abdomen, within the kidney"
    # grey 40 in grey 100 under the soft-tissue window (-160..240 HU)
    assert tumour["texture"] == "hypodense relative to the surrounding tissue (about -97 HU against -3 HU), homogeneous"
    assert tumour["size"] == "about 10 x 8.6 mm" and tumour["size_mm"] == [10.4, 8.6]
    assert (tumour["shape"], tumour["margin"]) == ("oval", "well-defined margin")
    assert tumour["image_location"] == "upper left part of the image"
    assert tumour["organ_location"] is None  # no organ context on abdominal CT
    assert all(roi["origin"] == "annotation" for roi in row["rois"])
    assert row["rois"][0]["label"] == "liver tumour"  # largest first
    assert row["organ"] == "liver"
    assert row["diseases"] == ["liver tumour", "renal cyst"]
    assert row["anatomy"] == ["kidney", "liver"]


def test_texture_words_follow_explicit_thresholds():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    ring = surrounding_ring(mask)
    flat = np.full((20, 20), 100, dtype=np.uint8)
    assert describe_texture(flat, mask, ring, "CT") == "isodense relative to the surrounding tissue, homogeneous"
    bright = flat.copy()
    bright[mask] = 150
    assert describe_texture(bright, mask, ring, "MR").startswith("hyperintense")
    mottled = flat.copy()
    mottled[mask] = np.tile([40, 160], 50)
    assert describe_texture(mottled, mask, ring, "CT").endswith("heterogeneous")
