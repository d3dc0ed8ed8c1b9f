"""Failure records: when an Airflow task of a source's DAG fails, what failed, where and why, as one
JSON record in the task log and in the store (``sources/<id>/failures/<run>/...``), so that failures
can be listed without opening logs. Messages lose every file path (DICOM folder names often hold
patient identifiers)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

from medtrinity_tasks.config import load_settings

log = logging.getLogger(__name__)
MESSAGE_CHARS = 500
_PATH = re.compile(r"[A-Za-z][\w+.-]*://[^\s'\"]*|/[^\s'\"]+")
_UNSAFE = re.compile(r"[^\w.-]+")


def without_paths(message: str) -> str:
    """``message`` on one line, every absolute path or URI path replaced by ``<path>``."""
    return " ".join(_PATH.sub("<path>", message).split())[:MESSAGE_CHARS]


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
        "log_url": getattr(ti, "log_url", None),
        "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def failure_key(record: dict) -> str:
    from medtrinity_tasks.storage.shards import source_prefix  # lazy: the DAG file imports this module

    name = f"{record['task_id']}-{record['map_index']}-try{record['try_number']}"
    return f"{source_prefix(record['source_id'])}/failures/{_UNSAFE.sub('_', record['run_id'])}/{name}.json"


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
