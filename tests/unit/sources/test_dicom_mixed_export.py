"""A mixed DICOM export as a site holds it: each input names its own modality and body region, the catalog entry
gives defaults and may restrict the modalities, each 2D object is an input of its own, and images without
annotation become records or rejects by the entry's ``roi`` policy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.dicom_listing import list_dicom_series
from tests.support import dicom_fixtures as fx

REAL = ("RG1_UNCR.dcm", "RG3_UNCR.dcm", "US1_UNCR.dcm")  # CR of the chest (PA), CR of an extremity, ultrasound


def entry(root: Path, **fields) -> SourceEntry:
    return SourceEntry.model_validate(
        {
            "id": "mixed_export",
            "name": "a mixed DICOM export",
            "homepage": None,
            "licence": "test",
            "modality": "OT",
            "body_region": "body",
            "format": "dicom",
            "layout": "series",
            "location": str(root),
            "allow_outside_data_dir": True,
            "synthetic": True,
            "labels": {1: {"name": "cube", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}},
            **fields,
        }
    )


@pytest.fixture
def export(tmp_path) -> Path:
    root = tmp_path / "export"
    fx.save(fx.ct_datasets("axial"), root / "ct")  # a CT series of the abdomen
    (root / "cr").mkdir()
    for name in REAL:
        shutil.copy(get_testdata_file(name), root / "cr" / name)
    return root


def test_each_input_names_its_own_modality_and_region(export):
    inputs = list_dicom_series(entry(export), export)
    found = sorted((item["modality"], item["body_region"], len(item["member_files"])) for item in inputs.values())
    assert found == [("CR", "chest", 1), ("CR", "extremity", 1), ("CT", "abdomen", fx.SHAPE[2]), ("US", "body", 1)]
    assert sum(key.startswith("image-") for key in inputs) == 3  # 2D objects, each an input of its own
    assert sum(key.startswith("series-") for key in inputs) == 1


def test_an_entry_may_keep_some_modalities_only(export):
    inputs = list_dicom_series(entry(export, modalities=["CT", "CR"]), export)
    rejected = [item for item in inputs.values() if item.get("reject_reason")]
    assert [item["modality"] for item in rejected] == ["US"]
    assert rejected[0]["reject_kind"] == "modality not among the source's modalities"
    assert rejected[0]["reject_reason"].endswith("US; the catalog entry keeps CT, CR")


def test_a_scoped_listing_finds_a_2d_object_without_reading_its_neighbours(export):
    source = entry(export)
    inputs = list_dicom_series(source, export)
    radiograph = next(item for item in inputs.values() if item["body_region"] == "extremity")
    again = list_dicom_series(source, export, scope=radiograph["scope"])
    assert list(again) == [radiograph["source_relpath"]]
    assert again[radiograph["source_relpath"]] == radiograph


@pytest.mark.parametrize(("roi", "records"), [("optional", True), ("required", False)])
def test_images_without_annotation_or_expert_follow_the_roi_policy(export, roi, records):
    from medtrinity_tasks.run.pipeline import input_stage

    source = entry(export, roi=roi)
    settings = load_settings().with_changes(data_dir=str(export.parent))
    stage = input_stage(source, settings, expert_follows=False)
    rows = stage([dict(item) for item in list_dicom_series(source, export).values()])
    made = [row for row in rows if not row.get("reject_reason")]
    refused = [row for row in rows if row.get("reject_reason")]
    if records:
        assert {row["modality"] for row in made} == {"CR", "CT", "US"} and not refused
        chest = next(row for row in made if row["body_region"] == "chest")
        assert chest["view"] == "PA" and chest["patient_orientation"] == ["L", "I"] and chest["axis"] == "image"
    else:
        assert not made and len(refused) == 4
        assert {row["reject_kind"] for row in refused} == {
            "image has no annotation and no expert covers its modality and region",
            "series has no SEG or RTSTRUCT annotation and no expert covers its modality and region",
        }
