"""2D sources annotated by tables (boxes, labels, report text) and by class folders."""

import pyarrow.parquet as pq
import pytest

from medtrinity_tasks.pipeline import run_source
from medtrinity_tasks.sources.samples import BAD_CHEST_XRAY, BAD_TILES
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore


@pytest.fixture
def inprocess(settings_env, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    return LocalStore(settings_env["MEDTRINITY_OUTPUT"])


def _rejects(manifest: dict) -> dict:
    return {r["input"]: r["reason"] for r in manifest["rejected"]}


def test_boxes_labels_and_report_text_from_a_table(samples_dir, inprocess):
    result = run_source("synthetic_chest_xray", progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 8 + len(BAD_CHEST_XRAY) + 1 == counts["used"] + counts["rejected"]
    manifest = inprocess.read_json(manifest_key("synthetic_chest_xray"))
    rejects = _rejects(manifest)
    assert set(rejects) == set(BAD_CHEST_XRAY)
    for path, expected in BAD_CHEST_XRAY.items():
        assert rejects[path].startswith(expected), rejects[path]
    (outside,) = manifest["quarantined"]  # a box beyond the image: the gate catches it, nothing is lost
    assert outside["input"] == "images/bad_box_outside.png" and "ROI box outside the image" in outside["reasons"]

    records = {r["source_relpath"]: r for r in pq.read_table(manifest["shards"][0]["uri"]).to_pylist()}
    nodule = records["images/cxr_0001.png"]  # x = 80 (patient right), y = 80 (upper zone), r = 8
    (roi,) = nodule["rois"]
    assert roi["bbox_xyxy"] == [72.0, 72.0, 89.0, 89.0]
    assert roi["location"] == "right superior chest, within the lung"
    assert "more opaque than the surrounding tissue" in roi["texture"]
    assert nodule["diseases"] == ["pulmonary nodule"]
    assert nodule["reference_text"] == "A nodule in the right upper lung zone."
    clear = records["images/cxr_0000.png"]
    assert clear["rois"] == [] and clear["diseases"] == []
    assert clear["coarse_caption"].endswith("labelled: no finding.")
    assert clear["reference_text"] == "No acute cardiopulmonary abnormality."


def test_class_folders_label_each_image(samples_dir, inprocess):
    result = run_source("synthetic_pathology_tiles", progress=lambda line: None)
    counts = result["counts"]
    assert counts["records"] == 3 * 8 and counts["rejected"] == len(BAD_TILES)
    manifest = inprocess.read_json(manifest_key("synthetic_pathology_tiles"))
    rejects = _rejects(manifest)
    assert set(rejects) == set(BAD_TILES)
    for path, expected in BAD_TILES.items():
        assert rejects[path].startswith(expected), rejects[path]
    records = [r for shard in manifest["shards"] for r in pq.read_table(shard["uri"]).to_pylist()]
    tumour = [r for r in records if "/TUM/" in r["source_relpath"]]
    assert len(tumour) == 8 and all(r["diseases"] == ["colorectal adenocarcinoma"] for r in tumour)
    assert all(r["rois"] == [] for r in records)
    assert "labelled colorectal adenocarcinoma epithelium" in tumour[0]["description"]["region_relationship"]
    fat = next(r for r in records if "/ADI/" in r["source_relpath"])
    assert fat["diseases"] == [] and fat["coarse_caption"].endswith("labelled: adipose tissue.")
