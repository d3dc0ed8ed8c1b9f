"""One run at a time per source and output: the run's lease, ``sources/<id>/lease.json`` in the output store.

The plan takes it, every shard task renews it, and the run's end releases it (``publish_source``; the
Airflow summary and ``run_source`` for a run that failed). It names the run and its holder (host, pid)
and is only ever written with the store's conditional writes (S3's If-None-Match / If-Match, a lock
file on a local directory), so two runs that plan at once cannot both believe they hold it. A lease not
renewed within MEDTRINITY_LEASE_TIMEOUT_S belongs to a dead run and may be taken; the taker first
writes that run's failure record, since a run killed hard wrote none. Times are the hosts' clocks (UTC),
so hosts sharing an output need synchronised clocks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.storage.shards import failure_key, source_prefix, unfinished_record
from medtrinity_tasks.storage.store import Store

log = project_logger(__name__)  # de-identified log lines
POLL_S = 15.0
"""How often a run told to wait looks at the lease again."""
ATTEMPTS = 10
"""Conditional writes tried before giving up when the lease keeps changing under us (parallel shard
tasks of one run renew it at once)."""
_taken_here = threading.local()


class LeaseHeld(MedtrinityError):
    """Another run is writing this source to this output."""


class LeaseLost(MedtrinityError):
    """The run no longer holds its lease: it expired and was taken, or it was cleared."""


def lease_key(source_id: str) -> str:
    return f"{source_prefix(source_id)}/lease.json"


def take_lease(store: Store, source_id: str, run_id: str, timeout_s: float, *, wait: bool = False) -> dict:
    """Take the lease for ``run_id``, or refuse with who holds it. Re-entrant for the same run id (an
    Airflow retry of the plan), and for a run that this thread planned before and left (a plan looked
    at, then run). With ``wait``, poll until the holder releases it or its lease expires; a lease
    renewed past the expiry first seen is refused then, so a wait is bounded by one lease timeout."""
    key = lease_key(source_id)
    deadline = None
    while True:
        current = _read(store, source_id)
        if current is None:
            lease = _fresh(run_id, timeout_s)
            if store.write_if(key, _encode(lease), None):
                return _remember(store, source_id, lease)
            continue  # another run took it in between: look again
        held, version = current
        mine = held["run_id"] == run_id
        left_here = not mine and held["run_id"] == _mine_here(store, source_id)
        if mine or left_here or _expired(held):
            if not left_here and (not mine or held["holder"] != _holder()):
                _record_lost(store, source_id, held, mine)
            lease = _fresh(run_id, timeout_s, held["taken_at"] if mine else None)
            if store.write_if(key, _encode(lease), version):
                return _remember(store, source_id, lease)
            continue
        if deadline is None:
            deadline = _expiry(held)
            if wait:
                log.warning("%s: waiting for %s", source_id, describe(held))
        if not wait or _now() >= deadline:
            waited = " after waiting for its expiry (it was renewed)" if wait else ""
            raise LeaseHeld(
                f"{source_id}: another run is writing to {store.uri}{waited}: {describe(held)}. Wait for it with "
                f"`medtrinity run --wait` (Airflow: the wait_for_lease param), or, if that run is dead, delete "
                f"{store.key_uri(key)} to clear its lease"
            )
        time.sleep(max(0.0, min(POLL_S, (deadline - _now()).total_seconds())))


def renew_lease(store: Store, source_id: str, run_id: str, timeout_s: float, doing: str) -> None:
    """Push the lease's expiry out, from a task of the run that holds it; ``LeaseLost`` if it does not."""
    key = lease_key(source_id)
    for _ in range(ATTEMPTS):
        current = _read(store, source_id)
        if current is None or current[0]["run_id"] != run_id:
            now = f"it is now held by {describe(current[0])}" if current else "it was released or cleared"
            raise LeaseLost(
                f"{source_id} {doing}: run {run_id} no longer holds its lease on {store.key_uri(key)} ({now}); "
                f"nothing more is written for this run: start a new one (in Airflow, or clear this one from its plan)"
            )
        held, version = current
        if store.write_if(key, _encode(_fresh(run_id, timeout_s, held["taken_at"])), version):
            return
    raise MedtrinityError(f"{source_id}: the lease {store.key_uri(key)} kept changing while run {run_id} renewed it")


def release_lease(store: Store, source_id: str, run_id: str) -> bool:
    """Release the lease if ``run_id`` holds it (a no-op otherwise); True if it was released here."""
    for _ in range(ATTEMPTS):
        current = _read(store, source_id)
        if current is None or current[0]["run_id"] != run_id:
            return False
        if store.delete_if(lease_key(source_id), current[1]):
            _forget(store, source_id, run_id)
            return True
    return False


def release_quietly(where: Store | str, source_id: str, run_id: str) -> None:
    """Release the run's lease if it still holds it, never raising: at the end of a run that failed, the
    run's own error is the one to report. A store that cannot be reached keeps the lease until it
    expires, and the warning says how to clear it."""
    from medtrinity_tasks.storage.store import open_store

    try:
        release_lease(open_store(where) if isinstance(where, str) else where, source_id, run_id)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        log.warning(
            "%s: could not release run %s's lease (%s); it stays until it expires, or delete %s in the output "
            "store to clear it", source_id, run_id, exc, lease_key(source_id),
        )  # fmt: skip


@contextlib.contextmanager
def planning_lease(store: Store, source_id: str, run_id: str, timeout_s: float, *, wait: bool = False):
    """The plan's writes under a lease it takes; a plan that fails releases it, since in Airflow no
    teardown runs after a failed setup task."""
    take_lease(store, source_id, run_id, timeout_s, wait=wait)
    try:
        yield
    except BaseException:
        release_quietly(store, source_id, run_id)
        raise


def describe(lease: dict) -> str:
    holder = lease["holder"]
    return (
        f"run {lease['run_id']} (host {holder.get('host')}, pid {holder.get('pid')}) since {lease['taken_at']}, "
        f"its lease expiring at {lease['expires_at']} unless renewed"
    )


def _read(store: Store, source_id: str) -> tuple[dict, str] | None:
    current = store.read_versioned(lease_key(source_id))
    if current is None:
        return None
    try:
        lease = json.loads(current[0])
        valid = isinstance(lease["holder"], dict) and bool(lease["run_id"] and lease["taken_at"] and _expiry(lease))
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise MedtrinityError(
            f"{store.key_uri(lease_key(source_id))} is not a lease this pipeline wrote; delete it if no run of "
            f"{source_id} is under way"
        )
    return lease, current[1]


def _record_lost(store: Store, source_id: str, lease: dict, mine: bool) -> None:
    """The failure record of a run that ended without releasing its lease (it was killed hard)."""
    holder = lease["holder"]
    last = f"(held by host {holder.get('host')}, pid {holder.get('pid')}, last renewed at {lease['renewed_at']})"
    message = (
        f"a task of this run ended without releasing the run's lease: it was killed or lost {last}"
        if mine
        else f"the run's lease expired without its end: it was killed or lost {last}"
    )
    record = unfinished_record(source_id, lease["run_id"], "run", "RunLost", message)
    store.write_json(failure_key(record), record)
    log.warning("medtrinity failure record: %s", json.dumps(record, sort_keys=True))


def _fresh(run_id: str, timeout_s: float, taken_at: str | None = None) -> dict:
    now = _now()
    return {
        "run_id": run_id,
        "holder": _holder(),
        "taken_at": taken_at or _iso(now),
        "renewed_at": _iso(now),
        "expires_at": _iso(now + timedelta(seconds=timeout_s)),
    }


def _encode(lease: dict) -> bytes:
    return json.dumps(lease, indent=2, sort_keys=True).encode()


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _expiry(lease: dict) -> datetime:
    return datetime.fromisoformat(lease["expires_at"])


def _expired(lease: dict) -> bool:
    return _expiry(lease) <= _now()


def _remember(store: Store, source_id: str, lease: dict) -> dict:
    if not hasattr(_taken_here, "runs"):
        _taken_here.runs = {}
    _taken_here.runs[(store.uri, source_id)] = lease["run_id"]
    return lease


def _mine_here(store: Store, source_id: str) -> str | None:
    return getattr(_taken_here, "runs", {}).get((store.uri, source_id))


def _forget(store: Store, source_id: str, run_id: str) -> None:
    if _mine_here(store, source_id) == run_id:
        del _taken_here.runs[(store.uri, source_id)]
