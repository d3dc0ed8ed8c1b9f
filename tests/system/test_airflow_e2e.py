"""A source DAG run for real with `airflow dags test`, its shards loaded with Hugging Face datasets."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from medtrinity_tasks.sources.samples.ct import UNLABELLED_CASES
from tests.support import SOURCE_ID
from tests.support.servers import BIN, REPO, airflow_env, free_port

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_source_dag_run_writes_loadable_shards_and_a_balanced_manifest(airflow_home, samples_dir, tmp_path):
    out = tmp_path / "out"
    env = airflow_env(
        airflow_home,
        MEDTRINITY_SAMPLES_DIR=str(samples_dir),
        MEDTRINITY_OUTPUT=str(out),
        MEDTRINITY_SHARD_SIZE="3",
        MEDTRINITY_RAY_NUM_CPUS="2",
    )
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", f"medtrinity__{SOURCE_ID}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=success" in finished, finished  # `dags test` exits 0 even when a task fails
    assert "rendered_map_index='shard-00002'" in log  # mapped tasks carry readable names

    manifest = json.loads((out / "sources" / SOURCE_ID / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["inputs"] == 8 + UNLABELLED_CASES == counts["used"] + counts["rejected"]
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    assert counts["rejected"] == 4 and all(r["reason"] for r in manifest["rejected"])
    assert len(manifest["shards"]) == 4  # ten inputs in shards of three
    assert manifest["quality"]["pass_rate"] >= manifest["quality"]["threshold"]

    datasets = pytest.importorskip("datasets")
    files = [shard["uri"] for shard in manifest["shards"] if shard["records"]]
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == counts["records"]
    assert isinstance(ds.features["image"], datasets.Image)
    with_roi = next(row for row in ds if row["rois"])
    image = with_roi["image"]
    assert image.size == (with_roi["width"], with_roi["height"]) and image.mode == "L"
    roi = with_roi["rois"][0]
    x0, y0, x1, y1 = roi["bbox_xyxy"]
    assert 0 <= x0 < x1 <= with_roi["width"] and 0 <= y0 < y1 <= with_roi["height"]
    assert roi["location"] and roi["mask_rle"]["counts"]
    passages = with_roi["knowledge"]  # retrieved from the session's demo index
    assert passages and all(p["corpus"] == "demo" and p["title"] and p["text"] for p in passages)
    assert set(with_roi["description"]) == {
        "modality",
        "organ_tissue",
        "roi_location",
        "roi_texture",
        "region_relationship",
    }
    assert with_roi["description"]["roi_location"].startswith(f"A {roi['label']}")
    assert Path(files[0]).parent.name == "shards"


def test_dry_run_lists_the_plan_and_writes_nothing(airflow_home, samples_dir, tmp_path):
    out = tmp_path / "out"
    env = airflow_env(airflow_home, MEDTRINITY_SAMPLES_DIR=str(samples_dir), MEDTRINITY_OUTPUT=str(out))
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "medtrinity__synthetic_dermoscopy", "-c", '{"dry_run": true}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=success" in finished, finished
    assert "dry run: 12 usable inputs in 1 shard(s) would be processed" in log  # 13 files, an orphan mask rejected
    assert "as SKIPPED since the map has 0 values to expand" in log
    assert "nothing was processed (dry run)" in log
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))  # nothing written


def test_an_unstaged_source_fails_at_once_with_a_failure_record(airflow_home, tmp_path):
    out = tmp_path / "out"
    env = airflow_env(airflow_home, MEDTRINITY_SAMPLES_DIR=str(tmp_path / "nothing"), MEDTRINITY_OUTPUT=str(out))
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "medtrinity__synthetic_dermoscopy"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=failed" in finished, finished
    (path,) = (out / "sources" / "synthetic_dermoscopy" / "failures").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["task_id"] == "plan" and record["try_number"] == 1  # no retries for what retrying cannot fix
    assert record["error_class"] == "SourceNotFound"
    assert record["message"].startswith("source synthetic_dermoscopy: directory <path> does not exist")
    assert str(tmp_path) not in json.dumps(record)


def test_a_failed_shard_leaves_a_record_and_a_rerun_completes_only_that_shard(airflow_home, samples_dir, tmp_path):
    out = tmp_path / "out"
    source = out / "sources" / "synthetic_dermoscopy"
    env = airflow_env(
        airflow_home,
        MEDTRINITY_SAMPLES_DIR=str(samples_dir),
        MEDTRINITY_OUTPUT=str(out),
        MEDTRINITY_SHARD_SIZE="3",  # 12 usable inputs: four shards
        MEDTRINITY_RUNNER="inprocess",
        MEDTRINITY_TASK_RETRIES="0",
    )
    blocker = source / "shards" / "shard-00001.parquet"  # a folder where shard 1's file must go: its write fails
    (blocker / "in-the-way").mkdir(parents=True)

    def dags_test() -> tuple[str, str]:
        done = subprocess.run([str(BIN / "airflow"), "dags", "test", "medtrinity__synthetic_dermoscopy"], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        log = done.stdout + done.stderr
        return next(line for line in log.splitlines() if "DagRun Finished" in line), log

    finished, log = dags_test()
    assert "state=failed" in finished
    assert "unfinished shards: shard-00001" in log  # the summary task reports on the failed run too
    assert "rejected: 1 x mask file without a matching image" in log
    works = {shard: json.loads((source / "work" / f"{shard}.json").read_text()) for shard in ("shard-00000",
             "shard-00002", "shard-00003")}  # fmt: skip
    assert not (source / "work" / "shard-00001.json").exists()
    (record_path,) = (source / "failures").rglob("process-1-try1.json")
    record = json.loads(record_path.read_text())
    assert record["shard_id"] == "shard-00001" and record["error_class"] == "IsADirectoryError"
    assert str(tmp_path) not in record["message"]

    shutil.rmtree(blocker)
    finished, log = dags_test()
    assert "state=success" in finished and "unfinished shards" not in log
    for shard, work in works.items():  # finished shards were skipped, not redone
        assert json.loads((source / "work" / f"{shard}.json").read_text()) == work, shard
    redone = json.loads((source / "work" / "shard-00001.json").read_text())
    assert redone["run_id"] != works["shard-00000"]["run_id"]
    manifest = json.loads((source / "manifest.json").read_text())
    assert manifest["counts"]["inputs"] == 13 == manifest["counts"]["used"] + manifest["counts"]["rejected"]


def test_failures_are_mailed_through_airflows_smtp_notifier_when_configured(airflow_home, tmp_path):
    from aiosmtpd.controller import Controller

    received = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        env = airflow_env(
            airflow_home,
            MEDTRINITY_SAMPLES_DIR=str(tmp_path / "nothing"),
            MEDTRINITY_OUTPUT=str(tmp_path / "out"),
            MEDTRINITY_NOTIFY_EMAILS="ops@example.org, data@example.org",
            AIRFLOW_CONN_SMTP_DEFAULT=f"smtp://127.0.0.1:{port}?disable_tls=true&disable_ssl=true"
            "&from_email=medtrinity%40example.org",
        )
        done = subprocess.run([str(BIN / "airflow"), "dags", "test", "medtrinity__synthetic_dermoscopy"], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        controller.stop()
    log = done.stdout + done.stderr
    assert "state=failed" in next(line for line in log.splitlines() if "DagRun Finished" in line)
    (mail,) = received
    assert sorted(mail.rcpt_tos) == ["data@example.org", "ops@example.org"]
    text = mail.content.decode(errors="replace")
    assert "medtrinity__synthetic_dermoscopy: task plan failed (try 1)" in text
    assert str(tmp_path) not in text  # no error text, so no file names, in mail


def test_a_run_below_its_pass_rate_fails_the_gate_task_with_the_reasons_and_the_report(
    airflow_home, samples_dir, tmp_path
):
    """A site's catalog entry whose label carries a date: every description repeats it, the gate
    quarantines each record as PHI-like text, and the gate task fails saying so and where to look."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    entry = (REPO / "medtrinity_tasks" / "sources" / "catalog" / "synthetic_dermoscopy.yaml").read_text()
    entry = entry.replace("id: synthetic_dermoscopy", "id: dermoscopy_dated_labels")
    entry = entry.replace("{name: pigmented skin lesion,", "{name: pigmented skin lesion seen 03/04/2021,")
    (catalog / "dermoscopy_dated_labels.yaml").write_text(entry)
    out = tmp_path / "out"
    env = airflow_env(airflow_home, MEDTRINITY_SAMPLES_DIR=str(samples_dir), MEDTRINITY_OUTPUT=str(out),
                      MEDTRINITY_CATALOG_DIRS=str(catalog), MEDTRINITY_RUNNER="inprocess")  # fmt: skip
    done = subprocess.run([str(BIN / "airflow"), "dags", "test", "medtrinity__dermoscopy_dated_labels"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    log = done.stdout + done.stderr
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=failed" in finished, finished
    report = out / "sources" / "dermoscopy_dated_labels" / "reports"
    assert (
        "dermoscopy_dated_labels: pass rate 0.00 is below the threshold 0.90 (0 of 8 records passed" in log
        and "Top quarantine reasons: PHI-like text (8)" in log
        and f"Report: {report / 'index.html'}" in log
    ), "\n".join(line for line in log.splitlines() if "failure record:" in line)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"] is False and summary["quarantined_by_reason"] == {"PHI-like text": 8}
    assert "quality gate FAILED" in (report / "index.html").read_text()
    pages = sorted(p.name for p in report.glob("shard-*.html"))
    assert pages and "Great Expectations" in (report / pages[0]).read_text()
    manifest = json.loads((out / "sources" / "dermoscopy_dated_labels" / "manifest.json").read_text())
    assert not manifest["published"] and manifest["shards"] == [] and not manifest["quality"]["passed"]
    (record,) = (out / "sources" / "dermoscopy_dated_labels" / "failures").rglob("gate-*.json")
    assert json.loads(record.read_text())["error_class"] == "GateFailed"
