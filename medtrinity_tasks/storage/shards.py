"""Shard and manifest layout on a store, and Parquet encoding of records.

sources/<source_id>/shards/<shard>.parquet      records that passed the gate
sources/<source_id>/quarantine/<shard>.parquet  records that did not, with their reasons
sources/<source_id>/work/<shard>.json           the shard's accounting (inputs, rejects, reasons)
sources/<source_id>/manifest.json               the published run: counts, shards, every reason
"""

from __future__ import annotations

import io

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


def to_parquet(rows: list[dict], quarantine: bool = False) -> bytes:
    schema = shard_schema(QUARANTINE_SCHEMA if quarantine else RECORD_SCHEMA)
    table = rows_to_table(rows, schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=256)
    return buffer.getvalue()


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))
