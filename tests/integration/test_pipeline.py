"""The pipeline's steps on the sample source, in-process: accounting, rejects, idempotence."""

import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import KnowledgeUnavailable, SourceNotFound, StoreUnavailable
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.run.pipeline import build_stages
from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.run.shard import process_shard
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.samples.ct import UNLABELLED_CASES
from medtrinity_tasks.storage.shards import manifest_key, shard_key
from medtrinity_tasks.storage.store import LocalStore

BAD_INPUTS = {
    "imagesTr/bad_truncated.nii.gz": "not a readable NIfTI file (EOFError",
    "imagesTr/bad_not_nifti.nii.gz": "not a readable NIfTI file (ImageFileError",
    "imagesTr/bad_mask_shape.nii.gz": "label shape (512, 504, 40) differs from image shape (512, 512, 40)",
    "imagesTr/bad_empty_mask.nii.gz": "label map is empty",
}


@pytest.fixture
def inprocess(settings_env, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    return settings_env


def test_run_accounts_for_every_input_and_record(inprocess):
    result = run_source("synthetic_ct_abdomen", progress=lambda line: None)
    store = LocalStore(inprocess["MEDTRINITY_OUTPUT"])
    manifest = store.read_json(manifest_key("synthetic_ct_abdomen"))
    counts = manifest["counts"]
    assert counts == result["counts"]
    assert counts["inputs"] == 8 + UNLABELLED_CASES and counts["inputs"] == counts["used"] + counts["rejected"]
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    assert counts["rejected"] == 4 and counts["used"] == 4 + UNLABELLED_CASES and counts["records"] > 20
    assert manifest["rejected_by_reason"] == {
        "not a readable NIfTI file": 2,
        "label shape (512, 504, 40) differs from image shape (512, 512, 40)": 1,
        "label map is empty": 1,
    }
    reasons = {r["input"]: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == set(BAD_INPUTS)
    for path, expected in BAD_INPUTS.items():
        assert reasons[path].startswith(expected), reasons[path]
    rows = sum(pq.read_table(shard["uri"]).num_rows for shard in manifest["shards"])
    assert rows == counts["records"]
    records = pq.read_table(manifest["shards"][-1]["uri"]).to_pylist()
    assert all(r["provenance"]["licence"] == "CC0-1.0" and r["provenance"]["run_id"] for r in records)
    assert [s["name"] for s in records[0]["provenance"]["stages"]] == [
        "slice_volumes", "annotation_rois", "expert_rois", "describe_rois", "coarse_caption", "retrieve_knowledge",
        "generate_template",
    ]  # fmt: skip
    assert all(r["knowledge"] for r in records)  # every record grounded in passages of the demo corpus
    found = [roi for r in records if r["source_relpath"].startswith("imagesTs/") for roi in r["rois"]]
    assert found and all(roi["origin"] == "expert synthetic_ct_lesions 1.0.0" for roi in found)
    assert all(roi["location"] and roi["size"] and roi["shape"] for roi in found)  # described by describe_rois
    assert all(r["quality"]["passed"] for r in records)
    report = store.read_json("sources/synthetic_ct_abdomen/reports/summary.json")  # the gate's report, beside
    assert report["passed"] and report["counts"] == counts and report["reference"]["records"] == 0  # no reports
    assert manifest["quality"]["report_uri"].endswith("reports/index.html")
    assert [p.name for p in (store.root / "sources/synthetic_ct_abdomen/reports").glob("shard-*.html")] == [
        "shard-00000.html"
    ]
    assert "label_slice" not in pq.read_schema(manifest["shards"][0]["uri"]).names  # working columns stay inside


def test_unlisted_image_files_are_rejected_not_ignored(samples_dir, inprocess, tmp_path, monkeypatch):
    root = _copy_source(samples_dir, tmp_path, monkeypatch)
    (root / "imagesTr" / "._phantom_000.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    result = run_source("synthetic_ct_abdomen", progress=lambda line: None)
    assert result["counts"]["inputs"] == 9 + UNLABELLED_CASES and result["counts"]["rejected"] == 5


def test_rerun_skips_finished_shards_and_force_rewrites_the_same_records(inprocess):
    run_source("synthetic_ct_abdomen", shard_size=3, progress=lambda line: None)
    store = LocalStore(inprocess["MEDTRINITY_OUTPUT"])
    first = {
        s: pq.read_table(store.key_uri(shard_key("synthetic_ct_abdomen", s)))["id"].to_pylist()
        for s in ("shard-00000", "shard-00001", "shard-00002")
    }

    shards = plan_shards("synthetic_ct_abdomen", shard_size=3)
    assert all(process_shard(shard)["skipped"] for shard in shards)
    forced = [process_shard(dict(shard, force=True)) for shard in shards]
    assert not any(s["skipped"] for s in forced)
    again = {s: pq.read_table(store.key_uri(shard_key("synthetic_ct_abdomen", s)))["id"].to_pylist() for s in first}
    assert again == first  # same ids, no duplicates
    all_ids = [i for ids in again.values() for i in ids]
    assert len(all_ids) == len(set(all_ids))


def test_replanning_with_another_shard_size_leaves_no_stale_shards(inprocess):
    run_source("synthetic_ct_abdomen", shard_size=2, progress=lambda line: None)
    result = run_source("synthetic_ct_abdomen", shard_size=16, progress=lambda line: None)
    store = LocalStore(inprocess["MEDTRINITY_OUTPUT"])
    assert store.list("sources/synthetic_ct_abdomen/shards/") == [
        "sources/synthetic_ct_abdomen/shards/shard-00000.parquet"
    ]
    assert (
        pq.read_table(store.key_uri(shard_key("synthetic_ct_abdomen", "shard-00000"))).num_rows
        == result["counts"]["records"]
    )


def test_missing_source_directory_is_a_clear_error(inprocess, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(SourceNotFound, match="does not exist; run `medtrinity samples`"):
        plan_shards("synthetic_ct_abdomen")


def test_unknown_source_and_bad_output_uri_are_clear_errors(inprocess):
    with pytest.raises(SourceNotFound, match="no source 'nope' in the catalog"):
        plan_shards("nope")
    with pytest.raises(StoreUnavailable, match="unsupported output URI"):
        plan_shards("synthetic_ct_abdomen", "gs://bucket/x")


def test_a_knowledge_base_that_cannot_be_searched_fails_the_plan_and_top_k_0_leaves_retrieval_out(
    inprocess, tmp_path, monkeypatch
):
    monkeypatch.setenv("MEDTRINITY_KNOWLEDGE_DIR", str(tmp_path / "never-indexed"))
    with pytest.raises(KnowledgeUnavailable, match="no knowledge collection .*`medtrinity knowledge index`"):
        plan_shards("synthetic_ct_abdomen")
    monkeypatch.setenv("MEDTRINITY_KNOWLEDGE_TOP_K", "0")
    assert plan_shards("synthetic_ct_abdomen")
    stages = build_stages(get_source("synthetic_ct_abdomen"), load_settings())
    assert "retrieve_knowledge" not in [stage.name for stage in stages]


def test_cli_prints_one_line_errors(inprocess, tmp_path):
    env = dict(inprocess, MEDTRINITY_SAMPLES_DIR=str(tmp_path / "nowhere"), PATH="/usr/bin:/bin")
    done = subprocess.run(
        [sys.executable, "-m", "medtrinity_tasks.cli", "run", "synthetic_ct_abdomen"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith("medtrinity: error: source synthetic_ct_abdomen: directory")


def _copy_source(samples_dir, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "samples"
    shutil.copytree(samples_dir, copy)
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(copy))
    return copy / "synthetic_ct_abdomen"


def test_dataset_json_paths_outside_the_source_are_rejected(samples_dir, inprocess, tmp_path, monkeypatch):
    import json

    root = _copy_source(samples_dir, tmp_path, monkeypatch)
    listing = json.loads((root / "dataset.json").read_text())
    listing["training"].append({"image": "../../etc/passwd", "label": "./labelsTr/phantom_000.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(listing))
    result = run_source("synthetic_ct_abdomen", progress=lambda line: None)
    manifest = LocalStore(inprocess["MEDTRINITY_OUTPUT"]).read_json(manifest_key("synthetic_ct_abdomen"))
    outside = "path in dataset.json points outside the source directory"
    assert {"input": "../../etc/passwd", "reason": outside, "kind": outside} in manifest["rejected"]
    assert result["counts"]["inputs"] == result["counts"]["used"] + result["counts"]["rejected"] == 9 + UNLABELLED_CASES


def test_malformed_dataset_json_is_a_clear_error(samples_dir, inprocess, tmp_path, monkeypatch):
    from medtrinity_tasks.errors import MedtrinityError

    root = _copy_source(samples_dir, tmp_path, monkeypatch)
    (root / "dataset.json").write_text('{"training": [{"label": "x"}]}')
    with pytest.raises(MedtrinityError, match="is not a Decathlon dataset.json"):
        plan_shards("synthetic_ct_abdomen")


def test_bad_setting_is_a_one_line_error(inprocess):
    env = dict(inprocess, MEDTRINITY_SHARD_SIZE="lots", PATH="/usr/bin:/bin")
    done = subprocess.run(
        [sys.executable, "-m", "medtrinity_tasks.cli", "run", "synthetic_ct_abdomen"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "medtrinity: error: MEDTRINITY_SHARD_SIZE must be an integer, got 'lots'",
    )


def test_shards_name_inputs_by_key_and_a_vanished_input_is_rejected(samples_dir, inprocess, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "samples"
    shutil.copytree(samples_dir / "synthetic_dermoscopy", copy / "synthetic_dermoscopy")
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(copy))
    (shard,) = plan_shards("synthetic_dermoscopy")
    assert all(isinstance(key, str) for key in shard["inputs"])  # keys only: no file lists in XCom
    (copy / "synthetic_dermoscopy" / "images" / "synthetic_0003.jpg").unlink()
    summary = process_shard(shard)
    assert summary["reject_reasons"]["no longer in the source"] == 1
    assert summary["inputs"] == summary["used"] + summary["rejected"]
