"""Shard and manifest layout on a store, and Parquet encoding of records.

sources/<source_id>/shards/<shard>.parquet      records that passed the gate
sources/<source_id>/quarantine/<shard>.parquet  records that did not, with their reasons
sources/<source_id>/work/<shard>.json           the shard's accounting (inputs, rejects, reasons)
sources/<source_id>/manifest.json               the published run: counts, shards, every reason
sources/<source_id>/failures/<run>/<task>.json  what failed in a run, one record per task try
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from medtrinity_tasks.records import QUARANTINE_SCHEMA, RECORD_SCHEMA, rows_to_table, shard_schema


def source_prefix(source_id: str) -> str:
    return f"sources/{source_id}"


def shard_key(source_id: str, shard_id: str) -> str:
    return f"{source_prefix(source_id)}/shards/{shard_id}.parquet"


def quarantine_key(source_id: str, shard_id: str) -> str:
    return f"{source_prefix(source_id)}/quarantine/{shard_id}.parquet"


def work_key(source_id: str, shard_id: str) -> str:
    return f"{source_prefix(source_id)}/work/{shard_id}.json"


def data_docs_key(source_id: str, shard_id: str) -> str:
    """A shard's Great Expectations Data Docs page, beside the run's report."""
    return f"{source_prefix(source_id)}/reports/{shard_id}.html"


def report_key(source_id: str, name: str) -> str:
    """The run's quality report: ``summary.json`` and ``index.html``."""
    return f"{source_prefix(source_id)}/reports/{name}"


def manifest_key(source_id: str) -> str:
    return f"{source_prefix(source_id)}/manifest.json"


_UNSAFE = re.compile(r"[^\w.-]+")


def failures_prefix(source_id: str, run_id: str) -> str:
    """Where a run's failure records lie; Airflow run ids hold ':' and '+', which become '_'."""
    return f"{source_prefix(source_id)}/failures/{_UNSAFE.sub('_', run_id)}"


def failure_key(record: dict) -> str:
    """One failure record per task try; a task killed before it could write its own is ``killed``."""
    tried = f"try{record['try_number']}" if record["try_number"] is not None else "killed"
    name = f"{record['task_id']}-{record['map_index']}-{tried}"
    return f"{failures_prefix(record['source_id'], record['run_id'])}/{name}.json"


def unfinished_record(
    source_id: str,
    run_id: str,
    task_id: str,
    error_class: str,
    message: str,
    *,
    shard_id: str | None = None,
    map_index: int = -1,
    log_url: str | None = None,
) -> dict:
    """A failure record written for a task or run that ended without writing its own (killed, lost),
    in the shape of the Airflow failure callback's records; its try is not known."""
    return {
        "source_id": source_id,
        "dag_id": f"medtrinity__{source_id}",
        "run_id": run_id,
        "task_id": task_id,
        "shard_id": shard_id,
        "map_index": map_index,
        "try_number": None,
        "error_class": error_class,
        "message": message,
        "log_url": log_url,
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def to_parquet(rows: list[dict], quarantine: bool = False) -> bytes:
    schema = shard_schema(QUARANTINE_SCHEMA if quarantine else RECORD_SCHEMA)
    table = rows_to_table(rows, schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=256)
    return buffer.getvalue()


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))
