"""Real images that no one here made, through the real pipeline in process, one run per source: every
DICOM file of pydicom's tests and of pydicom-data as one mixed export (CT, MR, CR, US, NM, secondary
captures, multi-frame, every compressed syntax pydicom decodes, SEG, RTSTRUCT, RT plans and doses,
reports, DICOMDIRs and broken files), InVesalius's head CT with its bone mask, and nibabel's test volumes.

What each file should become is decided from the file by pydicom or nibabel alone
(``tests/support/real_data.py``), never from what the pipeline did."""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.run.local import run_source
from tests.support import real_data
from tests.support.real_data import ANNOTATION, DEGENERATE, IMAGE, NOT_AN_IMAGE, UNDECODABLE, Published

CAPTION_WORDS = {
    "CR": "radiograph",
    "US": "ultrasound",
    "MR": "magnetic resonance",
    "CT": "computed tomography",
    "NM": "nuclear medicine",
}
"""A word the caption and the modality section must hold for records of each series' own Modality."""
COMPRESSED_FAMILIES = ("JPEG Baseline", "JPEG Extended", "JPEG Lossless", "JPEG-LS", "JPEG 2000", "RLE", "Deflated")
TEMPLATE_DEFECTS = {
    "an article before a vowel": re.compile(r"\ba [aeio]\w*", re.IGNORECASE),
    "a doubled word": re.compile(r"\b([a-z]+) \1\b", re.IGNORECASE),
    "an empty slot": re.compile(r"\s[.,;:]|\b(?:the|a|an|of|with|is)\s*[.,;:]", re.IGNORECASE),
    "a verb without its complement": re.compile(r"\bis with\b", re.IGNORECASE),
}
"""What the issue found in real records: "consistent with the annotated .", "a ill-defined margin",
"The white matter is with a well-defined margin"."""


@pytest.fixture(scope="module")
def staged(tmp_path_factory, knowledge_dir):
    """Every real source staged in one folder of data, catalog and output for the module, with the
    settings that point at it. All are staged before any run: the catalog is read once per process."""
    root = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in real_data.environment(root, knowledge_dir).items():
            patch.setenv(key, value)
        settings = load_settings()
        yield root, real_data.stage_real_sources(root, settings.min_image_side, settings.max_aspect_ratio)


def _run(root: Path, source_id: str) -> tuple[Published, str | None]:
    """The published outcome of one run, and the run's error if it raised (a failed gate among them)."""
    try:
        run_source(source_id, progress=lambda line: None)
        error = None
    except MedtrinityError as exc:
        error = f"{type(exc).__name__}: {exc}"
    return real_data.published(root / "out", source_id), error


@pytest.fixture(scope="module")
def mixed_dicom(staged):
    root, sources = staged
    source_id = real_data.MIXED_DICOM_ENTRY["id"]
    outcome, error = _run(root, source_id)
    return sources.dicom_files, real_data.published_names(source_id, dict(os.environ)), outcome, error


@pytest.fixture(scope="module")
def cranium(staged):
    root, sources = staged
    if sources.cranium is None:
        pytest.skip(real_data.INVESALIUS_MISSING)
    return sources.cranium, *_run(root, real_data.CRANIUM_ENTRY["id"])


@pytest.fixture(scope="module")
def nibabel_volumes(staged):
    root, sources = staged
    outcome, error = _run(root, real_data.NIBABEL_ENTRY["id"])
    return sources.nibabel_volumes, outcome, error


def _of_kind(files, *kinds):
    return [f for f in files if f.kind in kinds]


def _manifest(outcome: Published, error: str | None) -> dict:
    assert outcome.manifest is not None, f"no manifest was written (the run ended with: {error})"
    return outcome.manifest


def _degenerate_records(records: list[dict]) -> list[str]:
    settings = load_settings()
    return [
        f"{r['source_relpath']} {r['axis']} {r['slice_index']}: {r['width']} x {r['height']}"
        for r in records
        if min(r["width"], r["height"]) < settings.min_image_side
        or max(r["width"], r["height"]) > settings.max_aspect_ratio * min(r["width"], r["height"])
    ]


def _template_defects(records: list[dict]) -> dict[str, list[str]]:
    found = defaultdict(list)
    for record in records:
        texts = [record["coarse_caption"], *(record["description"] or {}).values()]
        for text in filter(None, texts):
            own = text.split("Background [")[0]  # a quoted passage is the corpus's text, not the template's
            for defect, pattern in TEMPLATE_DEFECTS.items():
                if match := pattern.search(own):
                    found[defect].append(f"{match.group(0)!r} in {own[:120]!r}")
    return dict(found)


# The mixed DICOM export


def test_every_file_of_the_mixed_export_is_accounted(mixed_dicom):
    files, names, outcome, error = mixed_dicom
    manifest = _manifest(outcome, error)
    counts = manifest["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
    assert (manifest.get("files") or {}).get("files") == len(files), f"files counted: {manifest.get('files')}"
    assert sum(row["files"] for row in manifest["inputs"]) == len(files)
    assert set(names) == {f.relpath for f in files}, "files the site cannot map to a published name"
    accounted = outcome.used() | set(outcome.rejected())
    missing = [f.relpath for f in files if names.get(f.relpath) not in accounted]
    assert not missing, f"{len(missing)} files are neither in a used nor in a rejected input: {missing[:10]}"
    assert "passed" in manifest["quality"], f"the manifest holds no gate verdict: {manifest['quality']}"


def test_nine_in_ten_image_objects_yield_records(mixed_dicom):
    files, names, outcome, _ = mixed_dicom
    images = _of_kind(files, IMAGE)
    by_input = outcome.records_by_input()
    without = [f for f in images if names.get(f.relpath) not in by_input]
    reasons = {**outcome.rejected(), **{k: "; ".join(v) for k, v in outcome.quarantined().items()}}
    assert len(images) >= 100
    assert len(images) - len(without) >= 0.9 * len(images), "image objects without records:\n" + "\n".join(
        f"{f.relpath} ({f.modality}, {f.syntax}): {reasons.get(names.get(f.relpath), 'no reason')}" for f in without
    )


def test_records_take_each_series_own_modality(mixed_dicom):
    files, names, outcome, _ = mixed_dicom
    by_input = outcome.records_by_input()
    default = real_data.MIXED_DICOM_ENTRY["modality"]
    wrong = []
    for f in _of_kind(files, IMAGE):
        for record in by_input.get(names.get(f.relpath), []):
            expected = f.modality or default
            word = CAPTION_WORDS.get(expected)
            said = f"{record['coarse_caption']} {(record['description'] or {}).get('modality', '')}".lower()
            if record["modality"] != expected or (word and said.count(word) < 2):
                wrong.append(f"{f.relpath}: {expected} object recorded as {record['modality']}: {said[:160]}")
    assert not wrong, "\n".join(wrong[:20])
    assert {"CR", "US", "MR", "CT", "NM", "OT"} <= {r["modality"] for r in outcome.records}


def test_no_record_is_degenerate_and_small_objects_are_turned_away_with_reasons(mixed_dicom):
    files, names, outcome, _ = mixed_dicom
    assert not _degenerate_records(outcome.records), _degenerate_records(outcome.records)[:10]
    by_input = outcome.records_by_input()
    reasons = {**outcome.rejected(), **{k: "; ".join(v) for k, v in outcome.quarantined().items()}}
    small = _of_kind(files, DEGENERATE)
    assert len(small) >= 30  # 16 x 16 DICOMDIR test images, 10 x 10 doses, 3 x 3 and 10 x 50 captures
    kept = [f.relpath for f in small if names.get(f.relpath) in by_input]
    assert not kept, f"objects too small to be images yielded records: {kept}"
    silent = [f.relpath for f in small if not reasons.get(names.get(f.relpath))]
    assert not silent, f"objects too small to be images ended without a reason: {silent}"


def test_single_slices_stay_whole_images_and_cine_is_sampled(mixed_dicom):
    """A single slice is one image in its own plane (the oblique MR2, the four sagittal 16 x 16 MR are
    never cut into strips); a cine object keeps the catalog's ``cine.frames``, evenly spaced."""
    files, names, outcome, _ = mixed_dicom
    by_input = outcome.records_by_input()
    frames = real_data.MIXED_DICOM_ENTRY["cine"]["frames"]
    wrong = []
    for f in _of_kind(files, IMAGE):
        records = by_input.get(names.get(f.relpath), [])
        if f.frames == 1:
            if len(records) > 1:
                wrong.append(f"{f.relpath}: one slice became {len(records)} records")
            elif records and abs(records[0]["width"] * f.rows - records[0]["height"] * f.columns) > max(
                f.rows, f.columns
            ):
                wrong.append(
                    f"{f.relpath}: {f.columns} x {f.rows} became {records[0]['width']} x {records[0]['height']}"
                )
        elif f.modality == "US" and len(records) != min(f.frames, frames):
            wrong.append(f"{f.relpath}: a cine of {f.frames} frames became {len(records)} records, not {frames}")
    assert not wrong, "\n".join(wrong)
    mr2 = [f for f in files if f.relpath.startswith("pydicom-data/MR2_")]
    assert mr2 and all(len(by_input.get(names.get(f.relpath), [])) == 1 for f in mr2)


def test_compressed_transfer_syntaxes_are_decoded_in_the_pipeline(mixed_dicom):
    files, names, outcome, _ = mixed_dicom
    by_input = outcome.records_by_input()
    reasons = {**outcome.rejected(), **{k: "; ".join(v) for k, v in outcome.quarantined().items()}}
    compressed = [f for f in _of_kind(files, IMAGE) if f.compressed]
    families = {family: [f for f in compressed if f.syntax.startswith(family)] for family in COMPRESSED_FAMILIES}
    assert all(families.values()), {family: len(members) for family, members in families.items()}
    undecoded = [f for f in compressed if names.get(f.relpath) not in by_input]
    assert not undecoded, "compressed objects pydicom decodes yielded no record:\n" + "\n".join(
        f"{f.relpath} ({f.syntax}): {reasons.get(names.get(f.relpath), 'no reason')}" for f in undecoded
    )


def test_non_images_and_broken_files_are_rejected_with_reasons_that_name_no_file(mixed_dicom):
    files, names, outcome, _ = mixed_dicom
    rejected, used = outcome.rejected(), outcome.used()
    turned_away = _of_kind(files, NOT_AN_IMAGE, ANNOTATION, UNDECODABLE)
    assert {f.relpath.rsplit("/", 1)[-1] for f in turned_away} >= {
        "rtstruct.dcm", "reportsi.dcm", "test-SR.dcm", "liver.dcm", "rtplan.dcm", "waveform_ecg.dcm",
        "MR_truncated.dcm", "README.txt", "DICOMDIR",
    }  # fmt: skip
    wrong = [f.relpath for f in turned_away if names.get(f.relpath) in used or not rejected.get(names.get(f.relpath))]
    assert not wrong, f"non-image or broken files not rejected with a reason: {wrong}"
    for f in _of_kind(files, ANNOTATION):
        assert re.search(r"\b(SEG|RTSTRUCT)\b", rejected[names.get(f.relpath)]), rejected[names.get(f.relpath)]
    parts = {part for f in files for part in f.relpath.split("/") if len(part) >= 5 and re.search(r"[A-Za-z]", part)}
    reasons = [*rejected.values(), *(r for rs in outcome.quarantined().values() for r in rs)]
    named = sorted({f"{part} in {reason!r}" for reason in reasons for part in parts if part in reason})
    assert not named, named[:10]


def test_mixed_export_text_reads_right(mixed_dicom):
    _, _, outcome, _ = mixed_dicom
    assert outcome.records and not _template_defects(outcome.records)


# InVesalius's head CT with its bone mask


def test_head_ct_records_carry_the_bone_with_sides_from_the_image(cranium):
    root, outcome, error = cranium
    manifest = _manifest(outcome, error)
    assert manifest["counts"]["inputs"] == manifest["counts"]["used"] == 1
    assert not _degenerate_records(outcome.records)
    rois = [(record, roi) for record in outcome.records for roi in record["rois"]]
    assert {roi["label"] for _, roi in rois} == {"bone"}
    bone_slices = set(np.flatnonzero(nib.load(root / "labelsTr" / "cranium.nii.gz").dataobj[...].any(axis=(0, 1))))
    with_bone = {record["slice_index"] for record, _ in rois}
    assert with_bone <= bone_slices and len(with_bone) >= 0.9 * len(bone_slices), (len(with_bone), len(bone_slices))
    assert all("head" in record["coarse_caption"] and record["modality"] == "CT" for record in outcome.records)
    sides = defaultdict(int)
    for record, roi in rois:
        named = {side for side in ("left", "right") if re.search(rf"\b{side}\b", roi["location"])}
        off_centre = abs(roi["centroid_xy"][0] - record["width"] / 2) > 0.1 * record["width"]
        if len(named) == 1 and off_centre:  # near the midline the body's frame, not the image's, decides
            (side,) = named
            on_left_of_image = roi["centroid_xy"][0] < record["width"] / 2
            left_is_image_right = record["patient_orientation"][0] == "L"
            assert (side == "right") == (on_left_of_image == left_is_image_right), (roi["location"], roi["centroid_xy"])
            sides[side] += 1
    assert sides["left"] >= 20 and sides["right"] >= 20, dict(sides)


def test_head_ct_text_reads_right(cranium):
    _, outcome, _ = cranium
    assert not _template_defects(outcome.records)
    repeated = [
        roi["location"] for r in outcome.records for roi in r["rois"] if f"within the {roi['label']}" in roi["location"]
    ]
    assert not repeated, f"the organ is both the finding and its location: {repeated[:3]}"


# nibabel's test volumes


def _sliceable(path: Path) -> bool:
    """Whether some axis of the volume gives slices the settings keep (both sides large enough)."""
    settings = load_settings()
    try:
        shape = nib.load(path).shape
    except Exception:  # not a volume nibabel reads as an image
        return False
    if len(shape) not in (3, 4):
        return False
    pairs = [(shape[a], shape[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    return any(min(p) >= settings.min_image_side and max(p) <= settings.max_aspect_ratio * min(p) for p in pairs)


def test_nibabel_volumes_yield_records_and_tiny_ones_are_rejected_with_reasons(nibabel_volumes):
    relpaths, outcome, error = nibabel_volumes
    manifest = _manifest(outcome, error)
    assert manifest["counts"]["inputs"] == len(relpaths) == manifest["counts"]["used"] + manifest["counts"]["rejected"]
    expected = {relpath for relpath, path in relpaths.items() if _sliceable(path)}
    assert expected >= {"imagesTs/anatomical.nii", "imagesTs/example4d.nii.gz"}
    by_input = outcome.records_by_input()
    assert set(by_input) == expected
    rejected = outcome.rejected()
    assert all(rejected.get(relpath) for relpath in set(relpaths) - expected), rejected
    assert not _degenerate_records(outcome.records)
    assert all(record["rois"] == [] and record["modality"] == "MR" for record in outcome.records)
    assert not _template_defects(outcome.records)


def test_no_identifier_of_the_files_reaches_an_output(staged, mixed_dicom):
    """Names, ids, accession numbers and institutions in the real headers, and the DICOMDIR studies'
    folders named by patient id, appear in no manifest, work record, report or record."""
    root, sources = staged
    files, _, outcome, _ = mixed_dicom
    source_id = real_data.MIXED_DICOM_ENTRY["id"]
    staged_files = [root / "data" / source_id / f.relpath for f in files]
    identifiers = real_data.header_identifiers(staged_files)
    assert {"77654033", "98890234", "CompressedSamples^MR2"} & identifiers, sorted(identifiers)[:20]
    texts = real_data.output_texts(root / "out", source_id)
    assert len(texts) > 10 and outcome.records
    leaked = sorted(
        {f"{value!r} in {Path(where).name}" for where, text in texts.items() for value in identifiers if value in text}
    )
    assert not leaked, leaked[:10]
