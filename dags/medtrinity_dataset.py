"""The dataset DAG: rebuild the dataset manifest and card whenever any source publishes.

Scheduled on the assets the source DAGs' publish tasks update (any of them), it writes
``dataset/manifest.json`` (records per source, modality and organ, quality pass rates) and
``README.md`` at the output root (a Hugging Face dataset card), and updates the ``medtrinity://dataset`` asset.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import AssetAny, Param, dag, get_current_context, task

from medtrinity_tasks.airflow_glue.assets import DATASET_ASSET, source_asset
from medtrinity_tasks.airflow_glue.defaults import task_defaults
from medtrinity_tasks.sources.catalog import load_catalog


@dag(
    dag_id="medtrinity_dataset",
    description="Rebuild the dataset manifest and card when a source publishes",
    schedule=AssetAny(*(source_asset(source_id) for source_id in load_catalog())),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(),
    tags=["medtrinity", "dataset"],
    params={"output_uri": Param("", type="string", description="Path or s3://bucket/prefix; empty: MEDTRINITY_OUTPUT")},
    doc_md=__doc__,
)
def medtrinity_dataset():
    @task(outlets=[DATASET_ASSET])
    def build() -> dict:
        from medtrinity_tasks.dataset import build_dataset

        dataset = build_dataset(get_current_context()["params"]["output_uri"] or None)
        return {"records": dataset["records"], "sources": len(dataset["sources"])}

    build()


medtrinity_dataset()
