"""Failure records: when an Airflow task of a source's DAG fails, what failed, where and why, as one
JSON record in the task log and in the store (``sources/<id>/failures/<run>/...``), so that failures
can be listed without opening logs. Messages lose every file path and data file name (DICOM folder
names often hold patient identifiers).

A task killed hard (SIGKILL, out of memory) runs no callback: the run's summary writes the record of
each shard that did not finish, and the next run's plan writes the record of a run whose lease expired
without its end (``storage.lease``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
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
_UNSAFE = re.compile(r"[^\w.-]+")


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
    in ``failure_record``'s shape; its try is not known."""
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


def failure_key(record: dict) -> str:
    tried = f"try{record['try_number']}" if record["try_number"] is not None else "killed"
    name = f"{record['task_id']}-{record['map_index']}-{tried}"
    return f"{failures_prefix(record['source_id'], record['run_id'])}/{name}.json"


def failures_prefix(source_id: str, run_id: str) -> str:
    from medtrinity_tasks.storage.shards import source_prefix  # lazy: the DAG file imports this module

    return f"{source_prefix(source_id)}/failures/{_UNSAFE.sub('_', run_id)}"


def record_failure(context: dict) -> None:
    """``on_failure_callback`` of every source task. It never raises: a failing callback must not
    hide the task's own error, which Airflow has already logged."""
    from medtrinity_tasks.storage import open_store

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


NOTICE_SUBJECT = "[medtrinity] {{ ti.dag_id }}: task {{ ti.task_id }} failed (try {{ ti.try_number }})"
NOTICE_BODY = (
    "<p>Task <b>{{ ti.task_id }}</b>{% if ti.map_index is not none and ti.map_index >= 0 %} "
    "({{ ti.rendered_map_index }}){% endif %} of <b>{{ ti.dag_id }}</b>, run {{ ti.run_id }}, failed "
    'on try {{ ti.try_number }}.</p><p><a href="{{ ti.log_url }}">Log</a>. The failure record, with '
    "the error, is under sources/&lt;source&gt;/failures/ in the output store.</p>"
)
"""No error text in mail: messages can name files, and a mailbox is not the place for file names."""


def failure_callbacks() -> list:
    """``on_failure_callback`` for every task: the failure record, and an e-mail through Airflow's
    SMTP notifier when MEDTRINITY_NOTIFY_EMAILS is set."""
    emails = load_settings().notify_emails
    if not emails:
        return [record_failure]
    try:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    except ImportError as exc:
        raise ImportError(
            "MEDTRINITY_NOTIFY_EMAILS is set but the SMTP provider is missing: "
            "pip install 'apache-airflow-providers-smtp' (or install medtrinity with the airflow extra)"
        ) from exc
    return [record_failure, SmtpNotifier(to=list(emails), subject=NOTICE_SUBJECT, html_content=NOTICE_BODY)]


def task_defaults() -> dict:
    """``default_args`` of every medtrinity DAG: the failure callbacks, and retries with exponential
    backoff (MEDTRINITY_TASK_RETRIES) for the faults that pass."""
    return {
        "owner": "medtrinity",
        "on_failure_callback": failure_callbacks(),
        "retries": load_settings().task_retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }
