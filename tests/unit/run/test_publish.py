"""The gate and publish on a real local store: a run that passes publishes its manifest; a run that fails
still leaves its manifest, with the verdict and every input's outcome, and publishes no shard."""

import pytest

from medtrinity_tasks.run.publish import GateFailed, gate_source, publish_source, summarise_run
from medtrinity_tasks.storage.lease import lease_key
from medtrinity_tasks.storage.shards import manifest_key, report_key, shard_key
from medtrinity_tasks.storage.store import LocalStore
from tests.unit.run.staged_runs import DOSE, RUN, SIZES, SOURCE, stage_run

FILES = {"files": 8, "used": 6, "rejected": 2}


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_OUTPUT", str(tmp_path / "out"))
    return tmp_path / "out"


def test_a_failed_gate_fails_the_run_and_writes_the_accounting_but_publishes_nothing(out):
    summaries = stage_run(out, passed=3, quarantined=2)
    with pytest.raises(GateFailed) as failed:
        gate_source(SOURCE, summaries)
    store = LocalStore(str(out))
    message = str(failed.value)
    assert message.startswith(
        f"{SOURCE}: pass rate 0.60 is below the threshold 0.90 (3 of 5 records passed, 2 of 4 inputs rejected). "
        "Top quarantine reasons: PHI-like text (2). Top reject reasons: not an image (1); inconsistent series (1). "
        f"Report: {store.key_uri(report_key(SOURCE, 'index.html'))}"
    )
    assert message.endswith(
        f"every input's outcome: {store.key_uri(manifest_key(SOURCE))} (medtrinity show {SOURCE} --inputs)"
    )
    manifest = store.read_json(manifest_key(SOURCE))
    assert manifest["published"] is False and manifest["published_at"] is None and manifest["shards"] == []
    quality = manifest["quality"]
    assert (quality["passed"], quality["pass_rate"], quality["threshold"]) == (False, 0.6, 0.9)
    assert message.startswith(quality["failure"])
    assert manifest["counts"] == {"inputs": 4, "used": 2, "rejected": 2, "produced": 5, "records": 3, "quarantined": 2}
    assert manifest["files"] == FILES
    assert manifest["rejected"] == [DOSE, SIZES] and len(manifest["quarantined"]) == 2
    assert [(row["input"], row["files"], row["outcome"]) for row in manifest["inputs"]] == [
        ("file-c", 1, "rejected"), ("series-a", 4, "records"), ("series-b", 2, "quarantined"),
        ("series-d", 1, "rejected"),
    ]  # fmt: skip
    assert store.read_json(report_key(SOURCE, "summary.json"))["passed"] is False
    assert store.exists(shard_key(SOURCE, "shard-00007"))  # nothing published, so nothing of it removed yet
    assert store.read_json(lease_key(SOURCE))["run_id"] == RUN  # the run's end releases it, as for any failure


def test_a_passed_gate_publishes_the_manifest_with_files_and_inputs(out):
    summaries = stage_run(out, passed=5, quarantined=0)
    verdict = gate_source(SOURCE, summaries)
    assert verdict["passed"] is True and verdict["failure"] is None and verdict["pass_rate"] == 1.0
    result = publish_source(SOURCE, summaries, None, verdict)
    store = LocalStore(str(out))
    manifest = store.read_json(manifest_key(SOURCE))
    assert result["files"] == manifest["files"] == FILES and result["quality"] == verdict
    assert manifest["published"] is True and manifest["published_at"] == manifest["written_at"]
    assert [s["shard_id"] for s in manifest["shards"]] == ["shard-00000"]
    assert {row["input"]: row["records"] for row in manifest["inputs"]} == {
        "file-c": 0, "series-a": 5, "series-b": 0, "series-d": 0
    }  # fmt: skip
    assert not store.exists(shard_key(SOURCE, "shard-00007")) and not store.exists(lease_key(SOURCE))


def test_a_failed_gate_replaces_the_published_manifest_so_its_records_are_not_published_twice(out):
    summaries = stage_run(out, passed=5, quarantined=0)
    publish_source(SOURCE, summaries, None, gate_source(SOURCE, summaries))
    summaries = stage_run(out, passed=1, quarantined=4)  # the same shards, redone, and most of it quarantined
    with pytest.raises(GateFailed):
        gate_source(SOURCE, summaries)
    manifest = LocalStore(str(out)).read_json(manifest_key(SOURCE))
    assert manifest["published"] is False and manifest["shards"] == [] and manifest["counts"]["records"] == 1


def test_the_run_summary_counts_files(out):
    summaries = stage_run(out, passed=3, quarantined=2)
    report = summarise_run(SOURCE, [s["shard_id"] for s in summaries])
    assert report["files"] == FILES and report["counts"]["inputs"] == 4 and report["unfinished_shards"] == []
