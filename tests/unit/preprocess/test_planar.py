"""2D sources: images with mask images (ISIC / Kvasir-SEG style), read, accounted for and described."""

import numpy as np
import pytest
from PIL import Image

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.preprocess.planar import to_8bit
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.readers.image2d import read_image, read_mask


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
