"""2D sources annotated by tables (boxes, labels, report text) and by class folders."""

import pyarrow.parquet as pq
import pytest

from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.samples.planar import BAD_CHEST_XRAY, BAD_TILES
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


def test_coco_boxes(samples_dir, inprocess, tmp_path, monkeypatch):
    """The chest radiographs re-described as COCO JSON, in a site catalog directory."""
    import csv
    import json
    import shutil

    import yaml

    from medtrinity_tasks.sources.catalog import get_source

    source_dir = samples_dir / "synthetic_chest_xray"
    root = tmp_path / "coco_cxr"
    shutil.copytree(source_dir / "images", root / "images")
    lines = list(csv.DictReader((source_dir / "table.csv").open()))
    images, annotations = [], []
    for number, line in enumerate(lines):
        if not line["Image Index"].startswith("cxr_"):
            continue
        images.append({"id": number, "file_name": line["Image Index"], "width": 256, "height": 256})
        if line["x"]:
            box = [float(line[c]) for c in ("x", "y", "w", "h")]
            annotations.append({"id": len(annotations), "image_id": number, "category_id": 1, "bbox": box})
    images.append({"id": 100, "file_name": "bad_label.png"})
    annotations.append({"id": 98, "image_id": 100, "category_id": 7, "bbox": [1, 1, 2, 2]})
    images.append({"id": 101, "file_name": "bad_box.png"})
    annotations.append({"id": 99, "image_id": 101, "category_id": 1, "bbox": [1, 1]})
    categories = [{"id": 1, "name": "Nodule"}, {"id": 7, "name": "Alien"}]
    (root / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    entry = get_source("synthetic_chest_xray").model_dump(exclude={"table"})
    entry.update(id="site_coco_cxr", layout="coco", location=str(root))
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "site_coco_cxr.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))

    result = run_source("site_coco_cxr", progress=lambda line: None)
    manifest = inprocess.read_json(manifest_key("site_coco_cxr"))
    rejects = _rejects(manifest)
    assert rejects["images/bad_label.png"] == "category 'Alien' is not defined by the catalog entry"
    assert rejects["images/bad_box.png"] == "annotation 99 has no valid bbox"
    assert rejects["images/bad_unlisted.png"] == "not listed in annotations.json"
    assert rejects["images/bad_box_outside.png"] == "not listed in annotations.json"
    assert result["counts"]["records"] == 8 and result["counts"]["rejected"] == 4
    records = {r["source_relpath"]: r for r in pq.read_table(manifest["shards"][0]["uri"]).to_pylist()}
    assert records["images/cxr_0001.png"]["rois"][0]["bbox_xyxy"] == [72.0, 72.0, 89.0, 89.0]


def test_question_answer_pairs_are_kept_as_reference_text(samples_dir, inprocess, tmp_path, monkeypatch):
    """A second table of question-answer pairs (several per image, VQA style) joins the findings table."""
    import csv
    import shutil

    import yaml

    from medtrinity_tasks.sources.catalog import get_source

    root = tmp_path / "cxr_qa"
    shutil.copytree(samples_dir / "synthetic_chest_xray", root)
    qa = root / "qa.csv"  # tables lie in the source directory, as every path the layout reads
    with qa.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "question", "answer"])
        writer.writerow(["cxr_0001.png", "Is there a nodule?", "Yes"])
        writer.writerow(["cxr_0001.png", "Where is the nodule?", "Right upper zone"])
        writer.writerow(["cxr_0001.png", "Is there a nodule?", "Yes"])  # repeated pairs are kept once
    entry = get_source("synthetic_chest_xray").model_dump()
    entry["table"]["files"].append({"path": qa.name, "image_column": "image", "text_columns": ["question", "answer"]})
    entry.update(id="site_cxr_qa", location=str(root))
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "site_cxr_qa.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))

    run_source("site_cxr_qa", progress=lambda line: None)
    manifest = inprocess.read_json(manifest_key("site_cxr_qa"))
    records = {r["source_relpath"]: r for s in manifest["shards"] for r in pq.read_table(s["uri"]).to_pylist()}
    assert records["images/cxr_0001.png"]["reference_text"] == (
        "A nodule in the right upper lung zone.\n"
        "question: Is there a nodule? answer: Yes\n"
        "question: Where is the nodule? answer: Right upper zone"
    )
    assert records["images/cxr_0000.png"]["reference_text"] == "No acute cardiopulmonary abnormality."


def test_inputs_the_listing_rejects_take_no_shard(samples_dir, inprocess):
    from medtrinity_tasks.run.plan import plan_shards

    shards = plan_shards("synthetic_chest_xray")
    planned = {key for shard in shards for key in shard["inputs"]}
    listing = inprocess.read_json("sources/synthetic_chest_xray/work/listing.json")
    at_listing = {r["input"] for r in listing["rejected"]}
    # unlisted files, unknown labels and malformed boxes are known before any pixel is read
    assert at_listing == {"images/bad_unlisted.png", "images/bad_label.png", "images/bad_box.png"}
    assert not (at_listing & planned) and "images/bad_missing.png" in planned  # a missing file is found by its reader
