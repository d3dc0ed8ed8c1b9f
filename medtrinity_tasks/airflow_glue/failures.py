"""Failure records: when an Airflow task of a source's DAG fails, what failed, where and why, as one
JSON record in the task log and in the store (``sources/<id>/failures/<run>/...``), so that failures
can be listed without opening logs. Messages lose every file path and data file name (DICOM folder
names often hold patient identifiers).

A task killed hard (SIGKILL, out of memory) runs no callback: the run's summary writes the record of
each shard that did not finish, and the next run's plan writes the record of a run whose lease expired
without its end (``storage.lease``). Keys and the records written without a callback are the
output layout's (``storage.shards``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import quote

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.phi import deidentify, project_logger

log = project_logger(__name__)  # de-identified log lines
MESSAGE_CHARS = 500
AIRFLOW_BASE_URL = "http://localhost:8080"
"""What Airflow itself falls back to when ``[api] base_url`` is not set."""
_DATA_FILE = r"(?:nii\.gz|tar\.gz|dcm|nii|mha|mhd|nrrd|png|jpe?g|tiff?|bmp|csv|tsv|json|txt|zip|tar|gz|parquet)\b"
_WORD = r"[^\s/\\'\":;]+"
_NAME = rf"(?:{_WORD}(?: {_WORD})+|[^\s/\\'\"]+)"  # a folder or file name: words without a colon, or one word
_LAST = rf"(?:{_NAME}\.{_DATA_FILE}|[^\s'\"]*[^\s'\":;,.)\]])"  # a data file's name, or what runs to a space
_PATH = re.compile(
    rf"(?P<path>[a-z][\w+.-]*://(?:{_NAME}/)*{_LAST}?"  # URIs: s3://, file://, http://
    rf"|(?:\\\\+|(?<!\w)[a-z]:[\\/]+)(?:{_NAME}[\\/]+)*{_LAST}?"  # Windows: C:\..., UNC \\server\share\...
    rf"|(?<![\w.-])/(?:{_NAME}/)*{_LAST}"  # POSIX absolute paths, whose folder names may hold spaces
    rf"|[\w.-]+/(?:[\w.-]+/)*{_LAST})"  # relative ones (no spaces: words around a slash stay words)
    rf"|(?P<file>[^\s/\\'\"<>()\[\]:;,]+\.{_DATA_FILE})",  # a data file's name on its own
    re.IGNORECASE,
)


def without_paths(message: str) -> str:
    """``message`` on one line, every path or URI replaced by ``<path>``, every data file's name by
    ``<file>`` and personal data by its placeholder (``phi.deidentify``). Folder names may hold
    spaces ("/data/My Patients/DOE JOHN/x.dcm")."""
    scrubbed = _PATH.sub(lambda match: "<path>" if match.group("path") else "<file>", message)
    return " ".join(deidentify(scrubbed).split())[:MESSAGE_CHARS]


def task_log_url(
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
    try_number: int | None = None,
    fallback: str | None = None,
) -> str:
    """The Airflow UI's page of a task instance (its log) under Airflow's configured ``[api] base_url``;
    without one, ``fallback`` (what Airflow gave) or Airflow's own default base."""
    from airflow.configuration import conf  # lazy: the DAG file imports this module

    base = conf.get("api", "base_url", fallback=None)
    if not base and fallback:
        return fallback
    url = f"{(base or AIRFLOW_BASE_URL).rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
    url += f"/tasks/{quote(task_id, safe='')}"
    if map_index is not None and map_index >= 0:
        url += f"/mapped/{map_index}"
    return f"{url}?try_number={try_number}" if try_number else url


def failure_record(context: dict) -> dict:
    """The record of one failed task instance, from its Airflow context."""
    ti = context["ti"]
    error = context.get("exception")
    error = getattr(error, "__cause__", None) or error  # the pipeline's error, not the wrapper that stopped retries
    shard = ti.rendered_map_index if ti.map_index is not None and ti.map_index >= 0 else None
    return {
        "source_id": ti.dag_id.removeprefix("medtrinity__"),
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "shard_id": shard,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "error_class": type(error).__name__ if error is not None else None,
        "message": without_paths(str(error)) if error is not None else None,
        "log_url": task_log_url(
            ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, getattr(ti, "log_url", None)
        ),
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def record_failure(context: dict) -> None:
    """``on_failure_callback`` of every source task. It never raises: a failing callback must not
    hide the task's own error, which Airflow has already logged."""
    from medtrinity_tasks.storage import open_store  # lazy, as below: the DAG files import this module
    from medtrinity_tasks.storage.shards import failure_key

    try:
        record = failure_record(context)
        log.error("medtrinity failure record: %s", json.dumps(record, sort_keys=True))
        settings = load_settings()
        output_uri = (context.get("params") or {}).get("output_uri") or settings.output_uri
        uri = open_store(output_uri, settings).write_json(failure_key(record), record)
        log.error("failure record written to %s", uri)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        log.error("could not write the failure record (%s: %s); the task's own error is above", type(exc).__name__,
                  without_paths(str(exc)))  # fmt: skip


def record_unfinished_shards(context: dict, shard_ids: list[str], unfinished: list[str], output_uri: str) -> list[dict]:
    """From the run's summary: a failure record for every shard that did not finish and has none of
    this run, because its task was killed before any callback could run."""
    from medtrinity_tasks.storage import open_store
    from medtrinity_tasks.storage.shards import failure_key, failures_prefix, unfinished_record

    ti = context["ti"]
    source_id = ti.dag_id.removeprefix("medtrinity__")
    store = open_store(output_uri)
    recorded = {store.read_json(key).get("shard_id") for key in store.list(failures_prefix(source_id, ti.run_id))}
    records = []
    for shard_id in unfinished:
        if shard_id in recorded:
            continue
        map_index = shard_ids.index(shard_id)  # the process task is mapped over the plan's shards in order
        record = unfinished_record(
            source_id, ti.run_id, "process", "TaskKilled",
            "the shard did not finish and no error was recorded: its task was killed (out of memory, SIGKILL) or lost",
            shard_id=shard_id, map_index=map_index, log_url=task_log_url(ti.dag_id, ti.run_id, "process", map_index),
        )  # fmt: skip
        store.write_json(failure_key(record), record)
        log.error("medtrinity failure record: %s", json.dumps(record, sort_keys=True))
        records.append(record)
    return records
