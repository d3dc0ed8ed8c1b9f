"""A run without Airflow (the ``medtrinity run`` command): the four steps in one process, shard after shard."""

from __future__ import annotations

from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.run.publish import gate_source, publish_source
from medtrinity_tasks.run.shard import process_shard
from medtrinity_tasks.storage.lease import release_quietly


def run_source(
    source_id: str,
    output_uri: str | None = None,
    *,
    limit: int | None = None,
    shard_size: int | None = None,
    force: bool = False,
    engine: str = "template",
    progress=print,
    wait_for_lease: bool = False,
) -> dict:
    """Plan, process, gate and publish one source; returns what ``publish_source`` returns. A run that
    fails releases its lease (publish released it on success)."""
    shards = plan_shards(
        source_id, output_uri, limit=limit, shard_size=shard_size, force=force, engine=engine,
        wait_for_lease=wait_for_lease,
    )  # fmt: skip
    total_inputs = sum(len(s["inputs"]) for s in shards)
    progress(f"{source_id}: {total_inputs} usable inputs in {len(shards)} shard(s)")
    output_uri, run_id = shards[0]["output_uri"], shards[0]["run_id"]  # a plan without shards has raised
    try:
        summaries = []
        for number, shard in enumerate(shards, 1):
            summary = process_shard(shard)
            summaries.append(summary)
            state = "skipped (finished earlier)" if summary["skipped"] else "done"
            progress(
                f"  [{number}/{len(shards)}] {shard['shard_id']} {state}: {summary['records']} records, "
                f"{summary['quarantined']} quarantined, {summary['rejected']} inputs rejected"
            )
        verdict = gate_source(source_id, summaries, output_uri)
        return publish_source(source_id, summaries, output_uri, verdict)
    except BaseException:
        release_quietly(output_uri, source_id, run_id)
        raise
