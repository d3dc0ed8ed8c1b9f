"""Location words must follow the patient, not the pixel grid: the same lesion stored under different
affines (RAS, LPS, flipped axes) is described on the same patient side."""

import nibabel as nib
import numpy as np
import pytest

from medtrinity_tasks.preprocess.slicing import AXES, display_view
from medtrinity_tasks.roi.location import describe_location, on_side, patient_axes, without_organ
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.readers.nifti import read_nifti


@pytest.mark.parametrize(
    "orientation, centroid, expected",
    [
        (["L", "P"], (10, 10), "right anterior abdomen"),  # radiological view: image left = patient right
        (["L", "P"], (90, 90), "left posterior abdomen"),
        (["R", "P"], (10, 10), "left anterior abdomen"),  # neurological view flips the sides
        (["L", "A"], (10, 10), "right posterior abdomen"),  # rows running anterior flip front and back
        (["L", "P"], (50, 10), "midline anterior abdomen"),
        (["L", "I"], (90, 90), "left inferior abdomen"),  # a coronal slice
    ],
)
def test_describe_location_follows_patient_orientation(orientation, centroid, expected):
    assert describe_location(centroid, 100, 100, orientation, "abdomen") == expected


def test_describe_location_names_the_organ():
    assert describe_location((50, 50), 100, 100, ["L", "P"], "abdomen", "liver") == "midline abdomen, within the liver"
    assert describe_location((50, 50), 100, 100, ["L", "P"], "abdomen", "abdomen") == "midline abdomen"  # not twice


@pytest.mark.parametrize("centroid, side", [((10, 50), "right"), ((90, 50), "left"), ((50, 50), "midline")])
def test_a_coronal_slice_states_the_side_from_its_orientation(centroid, side):
    """Coronal slices hold left and right in their plane: the side comes from the orientation AXES gives them."""
    location = describe_location(centroid, 100, 100, AXES["coronal"][1], "abdomen")
    assert location.split()[0] == side


def test_a_sagittal_slice_has_no_side_in_its_plane_and_takes_the_slices():
    in_plane = describe_location((10, 10), 100, 100, AXES["sagittal"][1], "brain", "white matter")
    assert in_plane == "anterior superior brain, within the white matter"
    assert on_side(in_plane, "left") == "left anterior superior brain, within the white matter"
    assert on_side("central brain", "midline") == "midline brain"
    assert on_side("right anterior abdomen", "left") == "right anterior abdomen"  # the plane's own side stands
    assert on_side(in_plane, None) == in_plane
    assert without_organ(in_plane, "white matter") == "anterior superior brain"
    assert without_organ(in_plane, "grey matter") == in_plane


@pytest.mark.parametrize(
    "orientation, axes",
    [
        (["L", "P"], ("L", "P")), (["L", "F"], ("L", "I")), (["r", "H"], ("R", "S")), (["LP", "F"], ("L", "I")),
        (["L", "R"], None), (["P", "P"], None), (["Q", "P"], None), (["", "P"], None), (["L"], None), (None, None),
    ],
)  # fmt: skip
def test_patient_axes_read_dicom_orientations(orientation, axes):
    """DICOM's Patient Orientation says H and F for head and foot, and oblique directions by several letters."""
    assert patient_axes(orientation) == axes


def test_a_radiograph_with_dicom_orientation_is_located_in_patient_terms():
    assert describe_location((10, 90), 100, 100, ["L", "F"], "chest") == "right inferior chest"
    assert describe_location((10, 90), 100, 100, ["L", "L"], "chest") == "lower left part of the image"


@pytest.mark.parametrize("codes", ["RAS", "LPS", "LAS", "RPI", "PRS"])
def test_reader_reorients_any_affine_to_ras(tmp_path, codes):
    """A voxel on the patient's right (x > 0 in RAS+) ends at a low x index after reading."""
    ras = np.zeros((6, 8, 4), dtype=np.int16)
    ras[4, 2, 1] = 7  # right of centre, posterior, low
    ornt = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(codes))
    stored = nib.orientations.apply_orientation(ras, ornt)
    affine = nib.orientations.inv_ornt_aff(ornt, ras.shape)  # voxel index in `stored` -> index in `ras`
    affine = np.diag([1.5, 2.0, 3.0, 1.0]) @ affine  # anisotropic voxels
    affine[:3, 3] += (-4.0, 7.0, 11.0)
    path = tmp_path / f"{codes}.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), path)
    volume = read_nifti(path)
    assert volume.original_orientation == codes
    assert volume.data.shape == ras.shape
    assert volume.spacing_mm == (1.5, 2.0, 3.0)
    assert np.argwhere(volume.data == 7).tolist() == [[4, 2, 1]]


def test_axial_view_is_radiological():
    ras_slice = np.zeros((10, 6))  # [x to patient right, y to anterior]
    ras_slice[9, 5] = 1  # far right, far anterior
    view = display_view(ras_slice)
    assert view.shape == (6, 10)  # rows are y, columns are x
    assert np.argwhere(view == 1).tolist() == [[0, 0]]  # top (anterior) left (patient right)
    assert AXES["axial"] == (2, ["L", "P"])


def test_ct_windows_by_body_region_and_by_name():
    from medtrinity_tasks.sources.catalog import WINDOW_PRESETS

    ct = get_source("synthetic_ct_abdomen")
    assert ct.display_window() == ct.window  # the entry names its own
    assert ct.model_copy(update={"window": None}).display_window() == WINDOW_PRESETS["soft_tissue"]
    chest = ct.model_copy(update={"window": None, "body_region": "chest"})
    assert chest.display_window() == WINDOW_PRESETS["lung"]
    assert ct.model_copy(update={"window": "bone"}).display_window() == WINDOW_PRESETS["bone"]
    assert ct.model_copy(update={"window": None, "modality": "MR"}).display_window() is None  # percentiles


def test_fit_within_keeps_aspect_and_label_values():
    from medtrinity_tasks.preprocess.images import fit_within

    pixels = np.zeros((768, 1024, 3), np.uint8)
    labels = np.zeros((768, 1024), np.uint16)
    labels[100:300, 200:600] = 7
    small, small_labels, scale = fit_within(pixels, labels, 512)
    assert small.shape == (384, 512, 3) and small_labels.shape == (384, 512) and scale == 0.5
    assert set(np.unique(small_labels).tolist()) == {0, 7}
    assert fit_within(pixels, labels, 2048)[2] == 1.0 and fit_within(pixels, labels, 0)[2] == 1.0
