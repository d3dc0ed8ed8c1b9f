"""The source DAG's closing task: what the run did, read from the store, and the run's lease ended."""

from __future__ import annotations


def summarise_and_release(context: dict, source_id: str, shards: list[dict]) -> dict:
    """Log the run's counts of inputs, records and files, rejects and quarantines by reason and its
    unfinished shards (writing a failure record for each shard killed before its own callback could),
    then release the lease.
    Runs as a teardown, whatever happened before it, so it reads the work records, not XCom."""
    from medtrinity_tasks.airflow_glue.failures import record_unfinished_shards
    from medtrinity_tasks.run.publish import summarise_run
    from medtrinity_tasks.storage.lease import release_quietly

    if not shards:
        print("nothing was processed (dry run)")
        return {}
    output_uri, shard_ids = shards[0]["output_uri"], [s["shard_id"] for s in shards]
    try:
        report = summarise_run(source_id, shard_ids, output_uri)
        counts, files = report["counts"], report["files"]
        print(f"{counts['records']} records, {counts['quarantined']} quarantined, "
              f"{counts['rejected']} of {counts['inputs']} inputs rejected")  # fmt: skip
        if files:
            print(f"files: {files['files']} ({files['used']} used, {files['rejected']} rejected)")
        for kind in ("rejected", "quarantined"):
            for reason, count in report[f"{kind}_by_reason"].items():
                print(f"  {kind}: {count} x {reason}")
        if report["unfinished_shards"]:
            print(f"  unfinished shards: {', '.join(report['unfinished_shards'])}")
        for record in record_unfinished_shards(context, shard_ids, report["unfinished_shards"], output_uri):
            print(f"  {record['shard_id']} was killed before it could record why (failure record written)")
    finally:  # publish released the lease of a run that succeeded; this is for the others
        release_quietly(output_uri, source_id, context["run_id"])
    return report
