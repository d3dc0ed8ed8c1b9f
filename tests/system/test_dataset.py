"""The dataset manifest and card over every published source, and the DAG that rebuilds them."""

import json
import subprocess

import pytest
import yaml

from medtrinity_tasks.dataset import build_dataset
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.storage import LocalStore
from tests.support.servers import BIN, airflow_env, airflow_in_process


def test_dataset_manifest_and_card_cover_every_published_source(settings_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    published = {
        source_id: run_source(source_id, progress=lambda line: None)["counts"]
        for source_id in ("synthetic_dermoscopy", "synthetic_pathology_tiles")
    }
    dataset = build_dataset()
    assert [s["source_id"] for s in dataset["sources"]] == sorted(published)
    assert dataset["records"] == sum(c["records"] for c in published.values())
    assert dataset["records_by_modality"] == {
        "dermoscopy": published["synthetic_dermoscopy"]["records"],
        "histopathology": published["synthetic_pathology_tiles"]["records"],
    }
    assert sum(dataset["records_by_organ"].values()) == dataset["records"]

    out = LocalStore(settings_env["MEDTRINITY_OUTPUT"])
    assert out.read_json("dataset/manifest.json") == dataset
    card = out.read_bytes("README.md").decode()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "other" and front["size_categories"] == ["n<1K"]
    assert "| Synthetic dermoscopy images (MedTrinity sample source, not patient data) (`synthetic_dermoscopy`)" in card

    datasets = pytest.importorskip("datasets")  # the card's configs are what the Hub (and datasets) read
    loaded = datasets.load_dataset(settings_env["MEDTRINITY_OUTPUT"], split="train", cache_dir=str(tmp_path / "hf"))
    assert len(loaded) == dataset["records"] and isinstance(loaded.features["image"], datasets.Image)


@pytest.mark.airflow
def test_dataset_dag_is_scheduled_on_every_source_asset_and_builds(airflow_home, samples_dir, tmp_path):
    from medtrinity_tasks.sources.catalog import load_catalog
    from tests.support.servers import REPO

    with airflow_in_process(airflow_home):
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(dag_folder=str(REPO / "dags")).dags["medtrinity_dataset"]
    scheduled_on = {asset.uri for asset in dag.timetable.asset_condition.objects}
    assert scheduled_on == {f"medtrinity://sources/{source_id}" for source_id in load_catalog()}

    out = tmp_path / "out"
    env = airflow_env(airflow_home, MEDTRINITY_SAMPLES_DIR=str(samples_dir), MEDTRINITY_OUTPUT=str(out),
                      MEDTRINITY_RUNNER="inprocess")  # fmt: skip
    subprocess.run([str(BIN / "medtrinity"), "run", "synthetic_dermoscopy"], env=env, check=True, capture_output=True)
    done = subprocess.run([str(BIN / "airflow"), "dags", "test", "medtrinity_dataset"], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    log = done.stdout + done.stderr
    assert "state=success" in next(line for line in log.splitlines() if "DagRun Finished" in line), log[-3000:]
    manifest = json.loads((out / "dataset" / "manifest.json").read_text())
    assert [s["source_id"] for s in manifest["sources"]] == ["synthetic_dermoscopy"]
    assert (out / "README.md").read_text().startswith("---\nlicense: other")
