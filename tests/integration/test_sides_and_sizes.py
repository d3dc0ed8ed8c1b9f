"""Location words must follow the patient, not the pixel grid: the same lesion stored under different
affines (RAS, LPS, flipped axes) is described on the same patient side."""

import json

import numpy as np

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.run.pipeline import expert_stages, input_stage
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.stages import run_inprocess


def _slice_along(axis: str, relpath: str) -> list[dict]:
    from medtrinity_tasks.sources.catalog import Slicing

    source = get_source("synthetic_ct_abdomen")
    source = source.model_copy(update={"slicing": Slicing(axis=axis)})
    rows = [
        {"source_id": source.id, "source_relpath": relpath, "label_relpath": relpath.replace("imagesTr", "labelsTr")}
    ]
    return run_inprocess([input_stage(source, load_settings(), expert_follows=False), AnnotationRois(source)], rows)


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
    out = run_inprocess([input_stage(source, load_settings(), expert_follows=False), AnnotationRois(source)], rows)
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
    from medtrinity_tasks.roi.registry import expert_for

    settings = load_settings()
    source = get_source("synthetic_ct_abdomen")
    truth = json.loads((samples_dir / "synthetic_ct_abdomen" / "ground_truth.json").read_text())
    truth = {rel: t for rel, t in truth.items() if rel.startswith("imagesTs/")}
    rows = [{"source_id": source.id, "source_relpath": rel, "label_relpath": None} for rel in truth]
    stages = [
        input_stage(source, settings, expert_follows=True),
        AnnotationRois(source),
        *expert_stages(source, expert_for(source, settings), settings),
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
    out = run_inprocess([input_stage(source, load_settings(), expert_follows=False), AnnotationRois(source)], rows)
    widths_mm = [
        (roi["bbox_xyxy"][2] - roi["bbox_xyxy"][0]) * row["spacing_mm"][1]
        for row in out
        for roi in row["rois"]
        if roi["label"] == "liver tumour"
    ]
    diameter = 2 * truth[rel]["lesions"][0]["radius_mm"]
    pixel_mm = out[0]["spacing_mm"][1]
    assert abs(max(widths_mm) - diameter) <= 2 * pixel_mm  # within two pixels


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


def test_the_expert_places_lesions_of_dicom_series_on_their_true_side_in_any_acquisition(tmp_path, settings_env):
    """One unlabelled phantom written as axial, sagittal and coronal DICOM series: after reading, each
    is the same RAS volume, so the expert finds the same regions with the same words, on their true side."""
    from medtrinity_tasks.roi.registry import expert_for
    from medtrinity_tasks.sources.layouts import list_inputs
    from medtrinity_tasks.sources.samples import dicom as samples
    from medtrinity_tasks.sources.samples.phantom import case_affine, case_lesions, phantom

    affine = case_affine("LPS", 0, samples.DICOM_SHAPE, samples.DICOM_SPACING)
    lesions = case_lesions(0)
    hu, _ = phantom(affine, lesions, np.random.default_rng(0), samples.DICOM_SHAPE)
    root = tmp_path / samples.DICOM_SOURCE_ID
    for acquisition in samples.DICOM_ACQUISITIONS:
        samples.save_series(root / acquisition, samples.ct_series(hu, affine, acquisition))
    settings = load_settings()
    source = get_source(samples.DICOM_SOURCE_ID).model_copy(update={"location": str(root)})
    rows = list_inputs(source, settings)
    assert len(rows) == 3
    stages = [
        input_stage(source, settings, expert_follows=True),
        AnnotationRois(source),
        *expert_stages(source, expert_for(source, settings), settings),
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
