"""Organ context on synthetic phantoms: the masks must match the drawn anatomy, and the lung names and
location words must follow the patient orientation, not the pixel grid."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from medtrinity_tasks.roi.organs import (
    body_mask_ct,
    brain_mask_mr,
    lung_fields_ct,
    organ_relative_location,
)

SHAPE = (256, 256)


def ellipse(center: tuple[float, float], radii: tuple[float, float], shape: tuple[int, int] = SHAPE) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1.0


def disk(center: tuple[int, int], radius: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return ellipse(center, (radius, radius), shape)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


BODY = ellipse((128, 128), (80, 110))
IMAGE_LEFT_LUNG = ellipse((120, 75), (50, 38))  # the larger one: the patient's right lung in radiological view
IMAGE_RIGHT_LUNG = ellipse((120, 183), (45, 32))
TABLE = np.zeros(SHAPE, dtype=bool)
TABLE[236:244, 20:236] = True  # soft-tissue-like but apart from the body


def chest_ct(lungs: tuple[np.ndarray, ...] = (IMAGE_LEFT_LUNG, IMAGE_RIGHT_LUNG), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -1000.0)
    hu[BODY | TABLE] = 40.0
    for lung in lungs:
        hu[lung] = -850.0
    return hu + rng.normal(0.0, 100.0, SHAPE)  # noisy, as in a thin low-dose slice


def test_body_mask_covers_the_body_and_not_the_air_or_the_table():
    body = body_mask_ct(chest_ct())
    assert body.dtype == bool
    assert iou(body, BODY) > 0.95
    assert body[~BODY].sum() < 0.01 * BODY.sum()  # the air around the patient stays out
    assert not (body & TABLE).any()
    assert body[IMAGE_LEFT_LUNG].all()  # the lungs are holes of the body, filled


def test_body_mask_is_empty_without_tissue():
    assert not body_mask_ct(np.full((32, 32), -1000.0)).any()


def test_lung_fields_are_named_by_patient_side_in_radiological_view():
    fields = lung_fields_ct(chest_ct(), ["L", "P"])
    assert set(fields) == {"right lung", "left lung"}
    assert iou(fields["right lung"], IMAGE_LEFT_LUNG) > 0.9
    assert iou(fields["left lung"], IMAGE_RIGHT_LUNG) > 0.9


def test_lung_fields_swap_names_in_neurological_view():
    fields = lung_fields_ct(chest_ct(), ["R", "P"])
    assert iou(fields["right lung"], IMAGE_RIGHT_LUNG) > 0.9
    assert iou(fields["left lung"], IMAGE_LEFT_LUNG) > 0.9


def test_lung_fields_follow_the_anatomy_when_the_image_is_flipped():
    fields = lung_fields_ct(np.fliplr(chest_ct()), ["R", "P"])
    assert iou(fields["right lung"], np.fliplr(IMAGE_LEFT_LUNG)) > 0.9  # the larger lung stays the right one
    assert iou(fields["left lung"], np.fliplr(IMAGE_RIGHT_LUNG)) > 0.9


def test_a_single_lung_field_is_named_by_its_side_of_the_body():
    fields = lung_fields_ct(chest_ct(lungs=(IMAGE_RIGHT_LUNG,)), ["L", "P"])
    assert list(fields) == ["left lung"]
    assert iou(fields["left lung"], IMAGE_RIGHT_LUNG) > 0.9


def test_small_air_pockets_are_not_lung_fields():
    trachea = disk((70, 128), 5)  # larger than the noise, far smaller than a lung
    fields = lung_fields_ct(chest_ct(lungs=(IMAGE_LEFT_LUNG, trachea)), ["L", "P"])
    assert list(fields) == ["right lung"]
    assert iou(fields["right lung"], IMAGE_LEFT_LUNG) > 0.9


def test_no_lung_fields_in_soft_tissue():
    assert lung_fields_ct(chest_ct(lungs=()), ["L", "P"]) == {}


def test_brain_mask_ignores_background_noise_and_fills_ventricles():
    rng = np.random.default_rng(1)
    brain = ellipse((128, 128), (90, 70))
    image = rng.normal(10.0, 4.0, SHAPE)
    image[brain] = rng.normal(100.0, 8.0, int(brain.sum()))
    image[ellipse((120, 128), (15, 8))] = 25.0  # dark ventricle
    specks = [(10, 10), (20, 240), (240, 30), (245, 245), (128, 20)]
    for speck in specks:
        image[speck] = 150.0
    image[126:129, 20:29] = 100.0  # a bright blob tied to the brain's edge (column 58) by a thin streak
    image[127, 29:60] = 100.0
    mask = brain_mask_mr(image)
    assert iou(mask, brain) > 0.95
    assert not any(mask[speck] for speck in specks)
    assert not mask[125:130, 15:50].any()


# a frontal radiograph: patient right on image left, rows running inferior
FRONTAL = ["L", "I"]
RIGHT_LUNG_FRONTAL = ellipse((128, 70), (90, 35))
LUNGS_FRONTAL = {"right lung": RIGHT_LUNG_FRONTAL, "left lung": np.fliplr(RIGHT_LUNG_FRONTAL)}


def test_a_region_at_the_top_outer_edge_of_the_right_lung():
    roi = disk((60, 55), 4)
    assert organ_relative_location(roi, LUNGS_FRONTAL, FRONTAL) == "right lung, upper zone, peripheral"


def test_a_region_in_the_lower_zone_when_rows_run_superior():
    roi = disk((60, 55), 4)
    assert organ_relative_location(roi, LUNGS_FRONTAL, ["L", "S"]) == "right lung, lower zone, peripheral"


def test_a_region_at_the_centre_of_the_lung_is_central():
    words = organ_relative_location(disk((128, 70), 4), LUNGS_FRONTAL, FRONTAL)
    assert words == "right lung, middle zone, central"


def test_without_orientation_only_organ_and_depth():
    assert organ_relative_location(disk((128, 186), 4), LUNGS_FRONTAL, None) == "left lung, central"


def test_anterior_and_posterior_parts_on_an_axial_slice():
    organs = {"right lung": IMAGE_LEFT_LUNG, "left lung": IMAGE_RIGHT_LUNG}
    front, back = disk((85, 75), 3), disk((155, 75), 3)
    assert organ_relative_location(front, organs, ["L", "P"]).startswith("right lung, anterior part")
    assert organ_relative_location(back, organs, ["L", "P"]).startswith("right lung, posterior part")
    assert organ_relative_location(front, organs, ["L", "A"]).startswith("right lung, posterior part")


def test_a_region_outside_every_organ_has_no_organ_location():
    organs = {"right lung": IMAGE_LEFT_LUNG, "left lung": IMAGE_RIGHT_LUNG}
    assert organ_relative_location(disk((128, 128), 5), organs, ["L", "P"]) is None


def test_a_region_is_placed_in_an_organ_only_when_most_of_it_lies_there():
    organs = {"right lung": IMAGE_LEFT_LUNG}  # its outer edge is near column 37 at these rows
    mostly_out, mostly_in = np.zeros(SHAPE, dtype=bool), np.zeros(SHAPE, dtype=bool)
    mostly_out[122:126, 25:45] = True
    mostly_in[122:126, 30:50] = True
    assert (mostly_out & IMAGE_LEFT_LUNG).sum() < 0.5 * mostly_out.sum() < (mostly_in & IMAGE_LEFT_LUNG).sum()
    assert organ_relative_location(mostly_out, organs, ["L", "P"]) is None
    assert organ_relative_location(mostly_in, organs, ["L", "P"]) == "right lung, posterior part, peripheral"


def test_missing_simpleitk_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(ImportError, match="pip install SimpleITK"):
        body_mask_ct(chest_ct())


def test_body_frame_boxes_the_body_on_an_8_bit_ct_image_and_leaves_out_the_table():
    """On a 512 x 512 soft-tissue-windowed image the box is found on a subsampled grid: within a step
    of the body's true box, with the table below the body outside it."""
    from medtrinity_tasks.roi.regions import FRAME_GRID, body_frame
    from medtrinity_tasks.sources.catalog import get_source

    shape = (512, 512)
    body = ellipse((230, 300), (150, 180), shape)  # off-centre: the frame is not the image
    image = np.zeros(shape, dtype=np.uint8)  # air (and fat) below the window's floor
    image[body] = 140  # soft tissue
    image[480:490, 40:470] = 140  # the table
    source = get_source("synthetic_ct_abdomen")
    x0, y0, x1, y1 = body_frame(source, {}, image)
    step = 512 // FRAME_GRID
    rows, cols = np.nonzero(body)
    assert abs(x0 - cols.min()) <= step and abs(x1 - (cols.max() + 1)) <= step
    assert abs(y0 - rows.min()) <= step and abs(y1 - (rows.max() + 1)) <= step
    assert body_frame(source.model_copy(update={"modality": "MR"}), {}, image) is None
    assert body_frame(source, {"modality": "MR"}, image) is None  # an image's own modality rules
