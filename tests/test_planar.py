"""2D sources: images with mask images (ISIC / Kvasir-SEG style), read, accounted for and described."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.pipeline import run_source
from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.preprocess.planar import to_8bit
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.readers.image2d import read_image, read_mask
from medtrinity_tasks.sources.samples import BAD_DERMOSCOPY
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore

SOURCE = "synthetic_dermoscopy"


def test_dermoscopy_source_end_to_end(samples_dir, settings_env, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    result = run_source(SOURCE, progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 8 + len(BAD_DERMOSCOPY) == counts["used"] + counts["rejected"]
    assert counts["records"] == 8 and counts["produced"] == counts["records"] + counts["quarantined"]

    manifest = LocalStore(settings_env["MEDTRINITY_OUTPUT"]).read_json(manifest_key(SOURCE))
    reasons = {r["input"]: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == set(BAD_DERMOSCOPY)
    for path, expected in BAD_DERMOSCOPY.items():
        assert reasons[path].startswith(expected), reasons[path]

    truth = json.loads((samples_dir / SOURCE / "ground_truth.json").read_text())
    records = pq.read_table(manifest["shards"][0]["uri"]).to_pylist()
    assert {r["source_relpath"] for r in records} == set(truth)
    for record in records:
        (roi,) = record["rois"]
        assert roi["bbox_xyxy"] == truth[record["source_relpath"]]["bbox_xyxy"]
        x0, y0, x1, y1 = roi["bbox_xyxy"]
        assert roi["location"] == describe_location(
            ((x0 + x1) / 2, (y0 + y1) / 2), record["width"], record["height"], None, "skin"
        )
        assert "darker than the surrounding tissue" in roi["texture"]
        assert record["axis"] == "image" and record["spacing_mm"] is None and record["patient_orientation"] is None
        assert decode_png(record["image"]["bytes"]).shape == (240, 320, 3)  # colour kept
        assert "pixels lies in the" in record["description"]["roi_location"]
        assert record["coarse_caption"].startswith("Dermoscopy image of the skin; annotated findings")


def test_image_words_without_patient_orientation():
    assert describe_location((10, 10), 100, 100, None, "skin") == "upper left part of the image"
    assert describe_location((50, 90), 100, 100, [], "skin") == "lower part of the image"
    assert describe_location((50, 50), 100, 100, None, "skin") == "centre of the image"


def test_sixteen_bit_png_and_tiff_are_read_in_their_depth(tmp_path):
    deep = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    for name in ("deep.png", "deep.tif"):
        pixels = read_image(tmp_path / name)
        assert pixels.dtype.itemsize >= 2 and pixels.max() == deep.max(), name
        grey = to_8bit(pixels, colour=False)
        assert grey.dtype == np.uint8 and grey.min() == 0 and grey.max() == 255


def test_colour_is_kept_or_turned_to_luma():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    assert to_8bit(rgb, colour=True).shape == (4, 4, 3)
    assert np.all(to_8bit(rgb, colour=False) == round(0.299 * 200))


def test_masks_binary_or_labels(tmp_path):
    noisy = np.array([[0, 12, 130, 255]], np.uint8)  # a JPEG-ish binary mask
    Image.fromarray(noisy).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", "binary").tolist() == [[0, 0, 1, 1]]
    assert read_mask(tmp_path / "m.png", "labels").tolist() == [[0, 12, 130, 255]]
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputRejected, match="single-channel"):
        read_mask(tmp_path / "rgb.png", "labels")


def test_catalog_rejects_a_layout_that_does_not_fit_the_format():
    entry = {
        "id": "x", "name": "x", "homepage": None, "licence": "CC0-1.0", "modality": "CT", "body_region": "chest",
        "format": "nifti", "layout": "image_mask", "location": "/x",
        "labels": {1: {"name": "nodule", "kind": "lesion", "organ": "lung", "disease": "nodule"}},
    }  # fmt: skip
    with pytest.raises(ValueError, match="does not fit format 'nifti'"):
        SourceEntry.model_validate(entry)
