"""The backfill DAG: trigger the source DAGs whose output is missing or out of date.

``find`` compares the catalog with the store (sources never built, or built by another pipeline or
prompt version) and logs every source's status; ``trigger`` starts ``medtrinity__<source_id>`` for
each one that needs a build. Adding a YAML file to the catalog is all it takes for a new source to
be picked up. With ``dry_run`` it only lists them. Finished shards are skipped by the source runs,
so a backfill after a crash redoes only what is missing.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

from medtrinity_tasks.airflow_glue.defaults import task_defaults


@dag(
    dag_id="medtrinity_backfill",
    description="Trigger the source DAGs whose output is missing or out of date",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(),
    tags=["medtrinity", "backfill"],
    params={
        "dry_run": Param(False, type="boolean", description="Only list the sources that need a build"),
        "output_uri": Param("", type="string", description="Path or s3://bucket/prefix; empty: MEDTRINITY_OUTPUT"),
    },
    doc_md=__doc__,
)
def medtrinity_backfill():
    @task
    def find() -> list[str]:
        from medtrinity_tasks.backfill import build_status

        params = get_current_context()["params"]
        rows = build_status(params["output_uri"] or None)
        for row in rows:
            print(f"{'BUILD' if row['needs_build'] else 'skip ':5} {row['source_id']:28} {row['reason']}")
        wanted = [f"medtrinity__{row['source_id']}" for row in rows if row["needs_build"]]
        print(f"{len(wanted)} source(s) need a build{' (dry run: nothing triggered)' if params['dry_run'] else ''}")
        return [] if params["dry_run"] else wanted

    TriggerDagRunOperator.partial(task_id="trigger", skip_when_already_exists=True).expand(trigger_dag_id=find())


medtrinity_backfill()
