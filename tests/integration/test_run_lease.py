"""One run at a time per source and output: the run's lease, its refusal, waiting and expiry, and a
replanned source that never holds a record twice, whatever its shard sizes and however its runs end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.run import local
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.run.shard import process_shard
from medtrinity_tasks.storage import LocalStore
from medtrinity_tasks.storage import lease as leases
from medtrinity_tasks.storage.lease import LeaseHeld, LeaseLost, lease_key
from medtrinity_tasks.storage.shards import manifest_key, source_prefix

BIN = os.path.dirname(sys.executable)
SOURCE = "synthetic_dermoscopy"  # 12 usable inputs, 2D: quick runs


@pytest.fixture
def out(settings_env, monkeypatch) -> LocalStore:
    """The run's output store; runs in-process and without retrieval (record ids do not depend on it)."""
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    monkeypatch.setenv("MEDTRINITY_KNOWLEDGE_TOP_K", "0")
    return LocalStore(settings_env["MEDTRINITY_OUTPUT"])


def _foreign_lease(store, run_id: str, expires_in_s: float, host: str = "other-host") -> dict:
    """A lease as another machine's run would have written it."""
    now = datetime.now(UTC)
    lease = {
        "run_id": run_id,
        "holder": {"host": host, "pid": 4242},
        "taken_at": (now - timedelta(hours=1)).isoformat(timespec="milliseconds"),
        "renewed_at": now.isoformat(timespec="milliseconds"),
        "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(timespec="milliseconds"),
    }
    store.write_json(lease_key(SOURCE), lease)
    return lease


def _failures(store, run_id: str) -> list[dict]:
    return [store.read_json(key) for key in store.list(f"{source_prefix(SOURCE)}/failures/") if f"/{run_id}/" in key]


def test_a_second_run_is_refused_naming_the_holder_and_how_to_wait_or_clear(out):
    _foreign_lease(out, "scheduled__2026-12-01T00:00:00+00:00", expires_in_s=3600)
    with pytest.raises(LeaseHeld) as refused:
        plan_shards(SOURCE, run_id="manual__second")
    message = str(refused.value)
    holder = ("run scheduled__2026-12-01T00:00:00+00:00", "host other-host", "pid 4242", "since ", "expiring at ")
    for needle in (*holder, "medtrinity run --wait", "wait_for_lease", out.key_uri(lease_key(SOURCE))):
        assert needle in message, message
    assert "\n" not in message
    assert not out.exists(f"{source_prefix(SOURCE)}/work/listing.json")  # the refused plan wrote nothing
    assert plan_shards(SOURCE, run_id="manual__second", dry_run=True)  # a dry run takes no lease
    assert out.read_json(lease_key(SOURCE))["run_id"] == "scheduled__2026-12-01T00:00:00+00:00"


def test_the_plan_takes_the_lease_and_a_retry_of_the_same_run_takes_it_again(out):
    (first, *_) = plan_shards(SOURCE, run_id="scheduled__a")
    lease = out.read_json(lease_key(SOURCE))
    assert lease["run_id"] == "scheduled__a" and lease["holder"] == {"host": socket.gethostname(), "pid": os.getpid()}
    assert datetime.fromisoformat(lease["expires_at"]) - datetime.fromisoformat(lease["renewed_at"]) == timedelta(
        hours=4
    )  # MEDTRINITY_LEASE_TIMEOUT_S's default
    assert plan_shards(SOURCE, run_id="scheduled__a")[0] == first  # an Airflow retry of the plan
    assert out.read_json(lease_key(SOURCE))["taken_at"] == lease["taken_at"]
    assert _failures(out, "scheduled__a") == []  # the same process retried: nobody was killed

    _foreign_lease(out, "scheduled__a", expires_in_s=3600)  # taken by a try that was killed after it
    plan_shards(SOURCE, run_id="scheduled__a")
    (record,) = _failures(out, "scheduled__a")
    assert record["task_id"] == "run" and record["error_class"] == "RunLost"
    assert "ended without releasing the run's lease: it was killed or lost" in record["message"]


def test_an_expired_lease_of_a_dead_run_is_taken_after_writing_that_runs_failure_record(out):
    _foreign_lease(out, "scheduled__dead", expires_in_s=-1)
    plan_shards(SOURCE, run_id="scheduled__next")
    assert out.read_json(lease_key(SOURCE))["run_id"] == "scheduled__next"
    (record,) = _failures(out, "scheduled__dead")
    assert (record["task_id"], record["error_class"], record["shard_id"]) == ("run", "RunLost", None)
    assert record["message"].startswith("the run's lease expired without its end: it was killed or lost")
    assert record["source_id"] == SOURCE and record["run_id"] == "scheduled__dead" and record["failed_at"]


def test_a_run_told_to_wait_takes_the_lease_when_it_is_released_or_expires(out, monkeypatch):
    monkeypatch.setattr(leases, "POLL_S", 0.1)
    _foreign_lease(out, "scheduled__busy", expires_in_s=3600)
    releaser = threading.Timer(0.5, out.delete, [lease_key(SOURCE)])
    releaser.start()
    started = time.monotonic()
    plan_shards(SOURCE, run_id="manual__waits", wait_for_lease=True)
    assert 0.5 <= time.monotonic() - started < 30 and _failures(out, "scheduled__busy") == []  # released: no record
    assert out.read_json(lease_key(SOURCE))["run_id"] == "manual__waits"

    _foreign_lease(out, "scheduled__dies", expires_in_s=1.0)
    plan_shards(SOURCE, run_id="manual__waits-again", wait_for_lease=True)
    assert [r["error_class"] for r in _failures(out, "scheduled__dies")] == ["RunLost"]


def test_waiting_is_bounded_by_the_lease_expiry_first_seen(out, monkeypatch):
    monkeypatch.setattr(leases, "POLL_S", 0.1)
    _foreign_lease(out, "scheduled__alive", expires_in_s=1.0)
    renewer = threading.Timer(0.3, _foreign_lease, [out, "scheduled__alive", 3600])  # the holder renews it
    renewer.start()
    started = time.monotonic()
    with pytest.raises(LeaseHeld, match="after waiting for its expiry"):
        plan_shards(SOURCE, run_id="manual__gives-up", wait_for_lease=True)
    assert 0.9 <= time.monotonic() - started < 30
    renewer.join()


def test_a_shard_of_a_run_that_lost_its_lease_fails_and_writes_nothing(out):
    shards = plan_shards(SOURCE, run_id="scheduled__old", shard_size=4)
    process_shard(shards[0])  # renews the lease: still ours
    _foreign_lease(out, "scheduled__new", expires_in_s=3600)  # it expired and another run took it
    with pytest.raises(LeaseLost) as lost:
        process_shard(shards[1])
    assert "run scheduled__old no longer holds its lease" in str(lost.value)
    assert "now held by run scheduled__new (host other-host" in str(lost.value)
    assert not out.exists(f"{source_prefix(SOURCE)}/work/shard-00001.json")
    out.delete(lease_key(SOURCE))  # cleared by hand
    with pytest.raises(LeaseLost, match="it was released or cleared"):
        process_shard(shards[2])


def test_the_end_of_a_run_releases_the_lease_whether_it_succeeds_or_fails(out, monkeypatch):
    run_source(SOURCE, progress=lambda line: None)
    assert not out.exists(lease_key(SOURCE))  # released by publish

    def dies_on_the_second_shard(shard):
        if shard["shard_id"] == "shard-00001":
            raise MedtrinityError("shard task failed")
        return real_process_shard(shard)

    real_process_shard = local.process_shard
    monkeypatch.setattr(local, "process_shard", dies_on_the_second_shard)
    with pytest.raises(MedtrinityError, match="shard task failed"):
        run_source(SOURCE, shard_size=4, progress=lambda line: None)
    assert not out.exists(lease_key(SOURCE))  # released by run_source for the failed run
    _foreign_lease(out, "scheduled__someone-else", expires_in_s=3600)
    assert leases.release_lease(out, SOURCE, "manual__not-the-holder") is False  # only its holder releases it
    assert out.exists(lease_key(SOURCE))


def _published_ids(store) -> list[str]:
    """Every record id in ``shards/*.parquet``, as a reader of the dataset's files sees them."""
    files = [store.key_uri(k) for k in store.list(f"{source_prefix(SOURCE)}/shards/") if k.endswith(".parquet")]
    return [i for path in files for i in pq.read_table(path, columns=["id"])["id"].to_pylist()]


def _assert_balanced(store) -> dict:
    manifest = store.read_json(manifest_key(SOURCE))
    counts = manifest["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    shard_files = sorted(k for k in store.list(f"{source_prefix(SOURCE)}/shards/"))
    assert shard_files == sorted(f"{source_prefix(SOURCE)}/shards/{s['shard_id']}.parquet" for s in manifest["shards"])
    assert len(_published_ids(store)) == counts["records"]
    return manifest


def test_replanning_with_other_shard_sizes_never_publishes_a_record_twice_even_after_a_crash(out, monkeypatch):
    run_source(SOURCE, shard_size=3, progress=lambda line: None)
    ids = _published_ids(out)
    assert len(ids) == len(set(ids)) and len(_assert_balanced(out)["shards"]) == 4

    def crashes_after_one_shard(shard):  # the run dies between its shards and its publish
        if shard["shard_id"] != "shard-00000":
            raise RuntimeError("killed")
        return real_process_shard(shard)

    real_process_shard = local.process_shard
    monkeypatch.setattr(local, "process_shard", crashes_after_one_shard)
    with pytest.raises(RuntimeError, match="killed"):
        run_source(SOURCE, shard_size=2, progress=lambda line: None)
    monkeypatch.setattr(local, "process_shard", real_process_shard)
    crashed = _published_ids(out)
    assert len(crashed) == len(set(crashed)) and set(crashed) < set(ids)  # only the new shard-00000
    assert not out.exists(manifest_key(SOURCE))  # it named shards that are gone

    lines = []
    run_source(SOURCE, shard_size=2, progress=lines.append)  # the same plan again: its finished shard stays
    assert any("shard-00000 skipped (finished earlier)" in line for line in lines), lines
    again = _published_ids(out)
    assert sorted(again) == sorted(ids) and len(_assert_balanced(out)["shards"]) == 6

    run_source(SOURCE, shard_size=5, progress=lambda line: None)
    bigger = _published_ids(out)
    assert sorted(bigger) == sorted(ids) and len(_assert_balanced(out)["shards"]) == 3


def test_two_concurrent_runs_into_one_output_one_is_refused_and_no_record_is_published_twice(out, settings_env):
    env = dict(os.environ, PATH=f"{BIN}:/usr/bin:/bin")
    command = [os.path.join(BIN, "medtrinity"), "run", "synthetic_ct_abdomen", "--out", str(out.root)]
    first = subprocess.Popen([*command, "--shard-size", "2"], env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in first.stderr:  # the first run has planned (and holds the lease) once it says how many shards
        seen.append(line)
        if "usable inputs in" in line:
            break
    second = subprocess.run([*command, "--shard-size", "3"], env=env, capture_output=True, text=True, timeout=300)
    seen.append(first.stderr.read())
    assert first.wait(timeout=600) == 0, "".join(seen)
    assert second.returncode == 2, second.stderr
    error = second.stderr.strip().splitlines()[-1]
    assert "Traceback" not in second.stderr and second.stderr.count("medtrinity: error:") == 1
    assert error.startswith("medtrinity: error: synthetic_ct_abdomen: another run is writing to ")
    assert "run manual__" in error and f"pid {first.pid}" in error and "--wait" in error

    manifest = json.loads((out.root / manifest_key("synthetic_ct_abdomen")).read_text())
    files = sorted((out.root / source_prefix("synthetic_ct_abdomen") / "shards").glob("*.parquet"))
    ids = [i for path in files for i in pq.read_table(path, columns=["id"])["id"].to_pylist()]
    assert len(ids) == len(set(ids)) == manifest["counts"]["records"]
    assert [path.stem for path in files] == [shard["shard_id"] for shard in manifest["shards"]]  # the first run's
    assert not (out.root / lease_key("synthetic_ct_abdomen")).exists()
