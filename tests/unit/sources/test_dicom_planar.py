"""2D DICOM objects read in their own plane: real files of pydicom's and pydicom-data's collections (a chest
radiograph, ultrasound in palette colour, RGB and YBR, cine, a CT slice), their geometry from the header, and the
frames a cine rule keeps decoded alone, equal to the same frames of a whole decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medtrinity_tasks.sources.readers.dicom.header import read_dataset
from medtrinity_tasks.sources.readers.dicom.planar import is_planar, read_planar, sampled_frames
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS


def real(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install pydicom-data (the test extra lists it)")
    return Path(path)


def test_a_chest_radiograph_keeps_its_orientation_view_and_brightness():
    path = real("RG1_UNCR.dcm")  # CR, MONOCHROME1, PA, Patient Orientation L\F, a PixelSpacing of zeros
    (image,) = read_planar(path, DEFAULT_LIMITS, frames_kept=4)
    stored = pydicom.dcmread(path).pixel_array.astype(np.float32)
    assert image.pixels.shape == stored.shape and image.pixels.dtype == np.float32
    assert np.corrcoef(image.pixels.ravel(), stored.ravel())[0, 1] < -0.99  # MONOCHROME1: higher was darker
    assert image.patient_orientation == ("L", "I")  # F (foot) is the record's I
    assert image.view == "PA"
    assert image.spacing_mm is None  # zeros are no spacing: sizes are then given in pixels


def test_laterality_joins_the_view():
    (image,) = read_planar(real("RG3_UNCR.dcm"), DEFAULT_LIMITS, frames_kept=1)  # CR of a right extremity, AP
    assert image.view == "right AP" and image.patient_orientation == ("R", "I")


@pytest.mark.parametrize(
    "name",
    ["OBXXXX1A.dcm", "US1_UNCR.dcm", "SC_ybr_full_uncompressed.dcm", "SC_ybr_full_422_uncompressed.dcm"],
)
def test_colour_objects_read_as_8_bit_rgb(name):
    (image,) = read_planar(real(name), DEFAULT_LIMITS, frames_kept=1)  # palette, RGB, YBR and subsampled YBR
    assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 3 and image.pixels.shape[2] == 3
    assert image.pixels.std() > 10  # a picture, not a blank


def test_subsampled_ybr_reads_as_the_same_picture_in_rgb():
    (ybr,) = read_planar(real("SC_ybr_full_422_uncompressed.dcm"), DEFAULT_LIMITS, frames_kept=1)
    (rgb,) = read_planar(real("SC_rgb.dcm"), DEFAULT_LIMITS, frames_kept=1)
    assert np.abs(ybr.pixels.astype(int) - rgb.pixels.astype(int)).mean() < 3


def test_a_cine_keeps_the_frames_its_rule_samples_decoded_alone():
    path = real("color3d_jpeg_baseline.dcm")  # US cine, 120 frames, YBR_FULL_422 JPEG
    images = read_planar(path, DEFAULT_LIMITS, frames_kept=4)
    assert [image.frame for image in images] == sampled_frames(120, 4) == [0, 40, 79, 119]
    whole = pydicom.dcmread(path).pixel_array
    for image in images:
        assert np.array_equal(image.pixels, whole[image.frame])


def test_sampled_frames_are_evenly_spaced_and_never_more_than_there_are():
    assert sampled_frames(1, 4) == [0]
    assert sampled_frames(3, 4) == [0, 1, 2]
    assert sampled_frames(10, 2) == [0, 9]


@pytest.mark.parametrize(
    ("name", "planar"),
    [("RG1_UNCR.dcm", True), ("US1_UNCR.dcm", True), ("JPEG-LL.dcm", True), ("CT_small.dcm", False)],
)
def test_projections_colour_and_planes_without_patient_space_are_2d_objects(name, planar):
    path = real(name)
    header = read_dataset(path, pixels=False)
    assert is_planar(header, path, str(header.Modality)) is planar  # NM whole body: no plane in patient space
