"""Location words must follow the patient, not the pixel grid: the same lesion stored under different
affines (RAS, LPS, flipped axes) is described on the same patient side."""

import json

import nibabel as nib
import numpy as np
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.preprocess.slicing import AXES, VolumeSlicer, display_view
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.readers import read_nifti
from medtrinity_tasks.stages import run_inprocess


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


def test_sample_lesions_are_described_on_their_true_side(samples_dir, settings_env):
    """Each phantom is stored with a different affine; every lesion must land on its known side and organ."""
    source = get_source("synthetic_ct_abdomen")
    root = samples_dir / "synthetic_ct_abdomen"
    truth = json.loads((root / "ground_truth.json").read_text())
    truth = {rel: t for rel, t in truth.items() if rel.startswith("imagesTr/")}
    rows = [
        {"source_id": source.id, "source_relpath": rel, "label_relpath": rel.replace("imagesTr", "labelsTr")}
        for rel in truth
    ]
    out = run_inprocess([VolumeSlicer(source, load_settings()), AnnotationRois(source)], rows)
    assert {t["orientation"] for t in truth.values()} == {"LPS", "RAS", "LAS", "RPI"}
    seen = set()
    for row in out:
        for roi in row["rois"]:
            lesion = next(les for les in truth[row["source_relpath"]]["lesions"] if les["name"] == roi["label"])
            assert roi["location"].startswith(lesion["side"]), (row["source_relpath"], roi)
            assert roi["location"].endswith(f"within the {lesion['organ']}")
            assert roi["origin"] == "annotation"
            seen.add((row["source_relpath"], roi["label"]))
    assert seen == {(rel, les["name"]) for rel, t in truth.items() for les in t["lesions"]}


def test_the_expert_places_lesions_of_unlabelled_cases_on_their_true_side(samples_dir, settings_env):
    """The sample source's unlabelled cases, stored under other affines, through slicer and expert."""
    from medtrinity_tasks.roi.experts import DescribeRois, ExpertRois
    from medtrinity_tasks.roi.registry import expert_for

    settings = load_settings()
    source = get_source("synthetic_ct_abdomen")
    truth = json.loads((samples_dir / "synthetic_ct_abdomen" / "ground_truth.json").read_text())
    truth = {rel: t for rel, t in truth.items() if rel.startswith("imagesTs/")}
    rows = [{"source_id": source.id, "source_relpath": rel, "label_relpath": None} for rel in truth]
    stages = [
        VolumeSlicer(source, settings),
        AnnotationRois(source),
        ExpertRois(source, expert_for(source, settings), settings),
        DescribeRois(source, expert_for(source, settings)),
    ]
    out = run_inprocess(stages, rows)
    assert len({t["orientation"] for t in truth.values()}) == len(truth) > 1
    found = [(row, roi) for row in out for roi in row["rois"]]
    assert found
    for row, roi in found:
        lesion = next(les for les in truth[row["source_relpath"]]["lesions"] if les["name"] == roi["label"])
        assert roi["location"].startswith(lesion["side"]), (row["source_relpath"], roi["location"])
        assert roi["location"].endswith(f"within the {lesion['organ']}") and roi["origin"].startswith("expert ")


def test_sample_lesion_size_matches_ground_truth(samples_dir, settings_env):
    """The largest cross-section of a spherical lesion spans its diameter, within a voxel or two."""
    source = get_source("synthetic_ct_abdomen")
    truth = json.loads((samples_dir / "synthetic_ct_abdomen" / "ground_truth.json").read_text())
    rel = "imagesTr/phantom_001.nii.gz"
    rows = [{"source_id": source.id, "source_relpath": rel, "label_relpath": rel.replace("imagesTr", "labelsTr")}]
    out = run_inprocess([VolumeSlicer(source, load_settings()), AnnotationRois(source)], rows)
    widths_mm = [
        (roi["bbox_xyxy"][2] - roi["bbox_xyxy"][0]) * row["spacing_mm"][1]
        for row in out
        for roi in row["rois"]
        if roi["label"] == "liver tumour"
    ]
    diameter = 2 * truth[rel]["lesions"][0]["radius_mm"]
    pixel_mm = out[0]["spacing_mm"][1]
    assert abs(max(widths_mm) - diameter) <= 2 * pixel_mm  # within two pixels


def _slice_along(axis: str, relpath: str) -> list[dict]:
    from medtrinity_tasks.sources.catalog import Slicing

    source = get_source("synthetic_ct_abdomen")
    source = source.model_copy(update={"slicing": Slicing(axis=axis)})
    rows = [
        {"source_id": source.id, "source_relpath": relpath, "label_relpath": relpath.replace("imagesTr", "labelsTr")}
    ]
    return run_inprocess([VolumeSlicer(source, load_settings()), AnnotationRois(source)], rows)


def test_coronal_slices_keep_patient_sides(samples_dir, settings_env):
    out = _slice_along("coronal", "imagesTr/phantom_000.nii.gz")  # stored LPS
    assert {tuple(r["patient_orientation"]) for r in out} == {("L", "I")}
    assert all(r["height"] == 40 and r["spacing_mm"] == [5.0, 0.75, 0.75] for r in out)  # rows are 5 mm slices
    sides = {roi["label"]: roi["location"].split()[0] for r in out for roi in r["rois"]}
    assert sides == {"liver tumour": "right", "renal cyst": "left"}


def test_sagittal_slices_put_anterior_on_the_left(samples_dir, settings_env):
    out = _slice_along("sagittal", "imagesTr/phantom_000.nii.gz")
    assert {tuple(r["patient_orientation"]) for r in out} == {("P", "I")}
    cyst = [roi for r in out for roi in r["rois"] if roi["label"] == "renal cyst"]
    tumour = [roi for r in out for roi in r["rois"] if roi["label"] == "liver tumour"]
    assert cyst and all("posterior" in roi["location"] for roi in cyst)  # y = -65 mm: posterior
    assert tumour and all(roi["centroid_xy"][0] < 512 / 2 for roi in tumour)  # y = +20 mm: anterior half


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


def test_the_expert_places_lesions_of_dicom_series_on_their_true_side_in_any_acquisition(tmp_path, settings_env):
    """One unlabelled phantom written as axial, sagittal and coronal DICOM series: after reading, each
    is the same RAS volume, so the expert finds the same regions with the same words, on their true side."""
    from medtrinity_tasks.preprocess.dicom_series import DicomSeriesSlicer
    from medtrinity_tasks.roi.experts import DescribeRois, ExpertRois
    from medtrinity_tasks.roi.registry import expert_for
    from medtrinity_tasks.sources import samples
    from medtrinity_tasks.sources.layouts import list_inputs

    affine = samples._affine("LPS", 0, samples.DICOM_SHAPE, samples.DICOM_SPACING)
    lesions = samples._lesions(0)
    hu, _ = samples._phantom(affine, lesions, np.random.default_rng(0), samples.DICOM_SHAPE)
    root = tmp_path / samples.DICOM_SOURCE_ID
    for acquisition in samples.DICOM_ACQUISITIONS:
        samples.save_series(root / acquisition, samples.ct_series(hu, affine, acquisition))
    settings = load_settings()
    source = get_source(samples.DICOM_SOURCE_ID).model_copy(update={"location": str(root)})
    rows = list_inputs(source, settings)
    assert len(rows) == 3
    stages = [
        DicomSeriesSlicer(source, settings),
        AnnotationRois(source),
        ExpertRois(source, expert_for(source, settings), settings),
        DescribeRois(source, expert_for(source, settings)),
    ]
    words = {}
    for row in run_inprocess(stages, rows):
        assert not row.get("reject_reason"), row.get("reject_reason")
        words.setdefault(row["source_relpath"], set()).update(
            (row["slice_index"], roi["label"], roi["location"], roi["size"]) for roi in row["rois"]
        )
    assert len(words) == 3
    first, *others = words.values()
    assert first and all(other == first for other in others)
    truth = {lesion["name"]: lesion for lesion in lesions}
    assert {label for _, label, _, _ in first} == set(truth)
    for _, label, location, _ in first:
        assert location.startswith(truth[label]["side"]) and location.endswith(f"within the {truth[label]['organ']}")
