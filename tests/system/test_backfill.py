"""The backfill: which sources need a build, and the DAG that triggers their runs."""

import sqlite3
import subprocess

import pytest
import yaml

from medtrinity_tasks.backfill import build_status
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.storage import LocalStore
from medtrinity_tasks.storage.shards import manifest_key
from tests.support.servers import BIN, airflow_env

SAMPLES = {"synthetic_chest_xray", "synthetic_ct_abdomen", "synthetic_ct_dicom", "synthetic_dermoscopy",
           "synthetic_pathology_tiles"}  # fmt: skip


@pytest.fixture
def site_catalog(tmp_path, monkeypatch):
    """A new source added by dropping a YAML file into a site catalog directory."""
    (catalog := tmp_path / "catalog").mkdir()
    entry = get_source("synthetic_dermoscopy").model_dump()
    (catalog / "site_skin.yaml").write_text(yaml.safe_dump(dict(entry, id="site_skin")))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))
    return catalog


def test_build_status_names_sources_never_built_out_of_date_or_not_staged(settings_env, site_catalog, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    monkeypatch.delenv("MEDTRINITY_DATA_DIR", raising=False)
    run_source("synthetic_dermoscopy", progress=lambda line: None)
    run_source("synthetic_pathology_tiles", progress=lambda line: None)
    store = LocalStore(settings_env["MEDTRINITY_OUTPUT"])
    manifest = store.read_json(manifest_key("synthetic_pathology_tiles"))
    store.write_json(manifest_key("synthetic_pathology_tiles"), dict(manifest, pipeline_version="0.0.1"))

    status = {row["source_id"]: row for row in build_status()}
    assert status["synthetic_dermoscopy"] == {"source_id": "synthetic_dermoscopy", "needs_build": False,
                                              "reason": "up to date"}  # fmt: skip
    assert status["synthetic_pathology_tiles"]["reason"].startswith("built by pipeline 0.0.1 (now ")
    assert status["site_skin"]["reason"] == "never built"  # the new YAML is all it took
    needing = {source_id for source_id, row in status.items() if row["needs_build"]}
    assert needing == SAMPLES - {"synthetic_dermoscopy"} | {"site_skin"}
    assert status["kits19"]["reason"].startswith("not staged")  # real sources wait for MEDTRINITY_DATA_DIR


@pytest.mark.airflow
@pytest.mark.slow
def test_backfill_dag_dry_run_lists_and_real_run_triggers_the_source_dags(airflow_home, samples_dir, tmp_path):
    (catalog := tmp_path / "catalog").mkdir()  # a new source, on a schedule, added by its YAML alone
    entry = get_source("synthetic_dermoscopy").model_dump()
    (catalog / "site_daily.yaml").write_text(yaml.safe_dump(dict(entry, id="site_daily", schedule="@daily")))
    env = airflow_env(
        airflow_home,
        MEDTRINITY_SAMPLES_DIR=str(samples_dir),
        MEDTRINITY_OUTPUT=str(tmp_path / "out"),
        MEDTRINITY_CATALOG_DIRS=str(catalog),
    )
    airflow = str(BIN / "airflow")
    subprocess.run([airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=300)

    def runs() -> dict[str, int]:
        """Runs per source DAG, from the Airflow metadata database itself (SQLite in tests)."""
        with sqlite3.connect(airflow_home / "airflow.db") as db:
            counted = dict(db.execute("SELECT dag_id, COUNT(*) FROM dag_run GROUP BY dag_id").fetchall())
        return {source_id: counted.get(f"medtrinity__{source_id}", 0) for source_id in SAMPLES | {"site_daily"}}

    before = runs()
    dry = subprocess.run([airflow, "dags", "test", "medtrinity_backfill", "-c", '{"dry_run": true}'], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    log = dry.stdout + dry.stderr
    assert "state=success" in next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "6 source(s) need a build (dry run: nothing triggered)" in log
    assert runs() == before

    real = subprocess.run([airflow, "dags", "test", "medtrinity_backfill"], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    log = real.stdout + real.stderr
    assert "state=success" in next(line for line in log.splitlines() if "DagRun Finished" in line), log[-3000:]
    assert runs() == {source_id: count + 1 for source_id, count in before.items()}  # one queued run each

    # a scheduled source also takes Airflow's own backfill
    planned = subprocess.run(
        [airflow, "backfill", "create", "--dag-id", "medtrinity__site_daily", "--from-date", "2026-01-01",
         "--to-date", "2026-01-03", "--dry-run"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert all(f"2026-01-0{day} 00:00:00+00:00" in planned.stdout for day in (1, 2, 3)), planned.stdout[-2000:]
