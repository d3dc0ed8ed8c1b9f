"""Which axis a volume is cut along, and which side of the patient a sagittal slice shows."""

from __future__ import annotations

import pytest

from medtrinity_tasks.preprocess.slicing import slice_side, slicing_axis


@pytest.mark.parametrize(
    ("shape", "wanted", "axis"),
    [
        ((512, 512, 100), "axial", "axial"),  # a CT: the catalog's axis
        ((512, 512, 100), "coronal", "coronal"),  # 512 x 100 slices are large enough
        ((1, 256, 256), "axial", "sagittal"),  # one sagittal slice is itself, never 256 strips of 1 pixel
        ((4, 256, 256), "axial", "sagittal"),  # a thin sagittal stack is cut along the axis it was acquired along
        ((512, 512, 3), "sagittal", "axial"),
        ((256, 1, 256), "axial", "coronal"),
        ((64, 64, 64, 4), "axial", "axial"),  # channels do not count as an axis
    ],
)
def test_a_volume_is_cut_only_along_an_axis_it_has(shape, wanted, axis):
    assert slicing_axis(shape, wanted, min_side=32) == axis


def test_a_volume_too_small_every_way_has_no_axis():
    assert slicing_axis((8, 8, 4), "axial", min_side=32) is None


def test_a_sagittal_slice_states_its_side_of_the_centre():
    # RAS+: x grows to the patient's right, so a low index lies on the left
    assert slice_side("sagittal", 10, 100) == "left"
    assert slice_side("sagittal", 90, 100) == "right"
    assert slice_side("sagittal", 50, 100) == "midline"
    assert slice_side("sagittal", 0, 1) == "midline"
    assert slice_side("axial", 10, 100) is None
