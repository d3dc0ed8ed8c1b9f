"""``default_args`` of every medtrinity DAG: the failure callbacks and the retries."""

from __future__ import annotations

from datetime import timedelta

from medtrinity_tasks.airflow_glue.failures import record_failure
from medtrinity_tasks.config import load_settings

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
