"""One DAG per catalogued source: plan -> process (mapped over shards) -> gate -> publish.

This file only wires tasks. The work lives in ``medtrinity_tasks.run``, imported inside the
tasks, so parsing this file reads the YAML catalog and nothing heavier. Adding a YAML file to the
catalog is all it takes for a source to get its DAG.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, setup, task, teardown
from airflow.sdk.exceptions import AirflowFailException

from medtrinity_tasks.airflow_glue.assets import source_asset
from medtrinity_tasks.airflow_glue.defaults import task_defaults
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import SourceNotFound
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.roi.registry import expert_for
from medtrinity_tasks.sources.catalog import SourceEntry, load_catalog


def source_params() -> dict:
    """The trigger form: what a user may change for one run."""
    return {
        "output_uri": Param("", type="string", description="Path or s3://bucket/prefix; empty: MEDTRINITY_OUTPUT"),
        "limit": Param(0, type="integer", minimum=0, description="Use only the first N inputs; 0: all"),
        "shard_size": Param(0, type="integer", minimum=0, description="Inputs per shard; 0: MEDTRINITY_SHARD_SIZE"),
        "force": Param(False, type="boolean", description="Redo shards that are already finished"),
        "engine": Param("template", enum=list(ENGINES), description="The engine that writes the descriptions"),
        "dry_run": Param(False, type="boolean", description="List what the run would process, write nothing"),
        "wait_for_lease": Param(
            False,
            type="boolean",
            description="If another run is writing this source to this output, wait for it (at most until its "
            "lease expires) instead of failing",
        ),
    }


def source_doc(entry: SourceEntry, expert, pool: str) -> str:
    """The DAG's page in the UI: what each task does and what the form means."""
    return f"""
### {entry.name}

Builds (image, ROI, description) triplets for catalog source `{entry.id}`
({entry.modality}, {entry.body_region}, licence {entry.licence}).

Trigger form: *output_uri* (empty: `MEDTRINITY_OUTPUT`), *limit* (first N inputs; 0: all),
*shard_size* (0: `MEDTRINITY_SHARD_SIZE`), *force* (redo finished shards; otherwise a re-run only
does what is missing), *engine* (which engine writes the descriptions), *dry_run* (plan only: log
how many inputs and shards the run would process, write nothing, skip the other tasks),
*wait_for_lease* (one run at a time writes a source to an output: wait for another run's lease,
at most until it expires, instead of failing the plan).

*plan* lists the inputs and cuts them into shards; *process* runs the Ray pipeline on one shard
(ROI expert: {expert.name + " on images without annotations" if expert else "none"}; pool `{pool}`)
and writes its Parquet shard, quarantine, accounting and Data Docs page; *gate* writes the
quality report (`sources/{entry.id}/reports/index.html`) and, whether or not it passes, the manifest
with its verdict (`medtrinity show {entry.id} --inputs` lists every input's outcome), and fails the run
when too few records pass the quality suite; *publish* marks `sources/{entry.id}/manifest.json`
published and updates the source's asset; *summary* (which runs whatever happened before it) logs the run's counts,
rejects and quarantines by reason, and any unfinished shard, and releases the run's lease. A failed
task writes a failure record (task, shard, try, error class and message without file paths, log
URL) to its log and to `sources/{entry.id}/failures/`; the summary writes one for a shard whose
task was killed before it could.
"""


def build_source_dag(entry: SourceEntry):
    settings = load_settings()
    expert = expert_for(entry, settings)
    # shard tasks that run a GPU expert each take a slot of the GPU pool, sized to the GPUs there are
    pool = settings.gpu_pool if expert and settings.expert_gpus > 0 else "default_pool"

    @dag(
        dag_id=f"medtrinity__{entry.id}",
        description=entry.name,
        schedule=entry.schedule,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args=task_defaults(),
        tags=["medtrinity", "source", entry.modality, entry.body_region],
        params=source_params(),
        doc_md=source_doc(entry, expert, pool),
    )
    def source_pipeline():
        @setup  # plan and summary bracket the run; a failing summary never changes the run's state
        @task
        def plan() -> list[dict]:
            from medtrinity_tasks.run.plan import plan_shards

            context = get_current_context()
            params = context["params"]
            try:
                shards = plan_shards(
                    entry.id,
                    params["output_uri"] or None,
                    limit=params["limit"] or None,
                    shard_size=params["shard_size"] or None,
                    force=params["force"],
                    run_id=context["run_id"],
                    engine=params["engine"],
                    dry_run=params["dry_run"],
                    wait_for_lease=params["wait_for_lease"],
                )
            except SourceNotFound as exc:  # not staged: retrying cannot help
                raise AirflowFailException(str(exc)) from exc
            if params["dry_run"]:  # nothing to map: process, gate and publish are skipped
                inputs = sum(len(shard["inputs"]) for shard in shards)
                print(f"dry run: {inputs} usable inputs in {len(shards)} shard(s) would be processed")
                return []
            return shards

        @task(map_index_template="{{ shard_id }}", max_active_tis_per_dagrun=settings.parallel_shards, pool=pool)
        def process(shard: dict) -> dict:
            from medtrinity_tasks.run.shard import process_shard

            get_current_context()["shard_id"] = shard["shard_id"]
            return process_shard(shard)

        @task(retries=0)  # a quality verdict does not change on retry
        def gate(summaries: list[dict], shards: list[dict]) -> dict:
            from medtrinity_tasks.run.publish import gate_source

            # summaries[:] fetches all mapped results in one request; iterating probes past the end
            return gate_source(entry.id, list(summaries[:]), shards[0]["output_uri"] if shards else None)

        @task(outlets=[source_asset(entry.id)])
        def publish(verdict: dict, summaries: list[dict], shards: list[dict]) -> dict:
            from medtrinity_tasks.run.publish import publish_source

            return publish_source(entry.id, list(summaries[:]), shards[0]["output_uri"] if shards else None, verdict)

        @teardown  # runs once the work is done, failed or not: it says why, and ends the run's lease
        @task(retries=0)
        def summary(shards: list[dict]) -> dict:
            from medtrinity_tasks.airflow_glue.summary import summarise_and_release

            return summarise_and_release(get_current_context(), entry.id, shards)

        shards = plan()
        summaries = process.expand(shard=shards)
        publish(gate(summaries, shards), summaries, shards) >> summary(shards)

    return source_pipeline()


for _entry in load_catalog().values():
    globals()[f"medtrinity__{_entry.id}"] = build_source_dag(_entry)
