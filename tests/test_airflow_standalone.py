"""The sample source's DAG run by a real `airflow standalone`, driven through the REST API.

Standalone runs in its own session (``start_new_session=True``) with a fresh Airflow home, a free
loopback port and an isolated Ray temp dir. The test logs in the way the UI does with the simple
auth manager (user ``admin``, password from the ``simple_auth_manager_passwords.json.generated``
file standalone writes in the Airflow home), triggers a run, waits for it and checks the manifest.
Whatever happens, every process of that session is stopped: SIGTERM to the group, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import BIN, SOURCE_ID, airflow_env

DAG_ID = f"medtrinity__{SOURCE_ID}"
BAD_INPUTS = 4  # write_ct_abdomen(bad_inputs=True) adds four inputs that must be rejected
START_TIMEOUT = 180  # s: database migration + API server start
DAG_TIMEOUT = 120  # s: first parse of the DAG file
RUN_TIMEOUT = 300  # s: the run itself (Ray starts once per mapped task)
STOP_GRACE = 15  # s: SIGTERM to SIGKILL (Ray workers of a task cut short ignore SIGTERM)

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (the sockets stay open until all are picked)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _tail(path: Path, lines: int = 80) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def _session_processes(sid: int, marker: str) -> dict[int, str]:
    """Live processes of standalone's session, or carrying this test's marker in their environment
    (task processes and Ray daemons change process group, not session; the marker is a backstop)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            state = stat[stat.rindex(")") + 2]
            if state in "ZX":  # zombies hold no resources; their parent (or init) reaps them
                continue
            ours = os.getsid(pid) == sid
            if not ours:
                ours = marker.encode() in (entry / "environ").read_bytes()
            if ours:
                found[pid] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
    return found


def _signal(pids, sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _stop(proc: subprocess.Popen, marker: str) -> dict[int, str]:
    """SIGTERM standalone's process group, wait, then SIGKILL whatever of its session is left.
    Returns the processes that needed SIGKILL."""
    sid = proc.pid  # start_new_session: standalone leads its own session and process group
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE
    try:
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass
    # processes outside the group (task processes, Ray daemons) get the same grace, then SIGTERM
    left = _session_processes(sid, marker)
    _signal(left, signal.SIGTERM)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = _session_processes(sid, marker)
    _signal(left, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    end = time.monotonic() + 10
    while _session_processes(sid, marker) and time.monotonic() < end:
        time.sleep(0.2)
    return left


class Api:
    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.base + path, timeout=30, **kwargs)

    def login(self, home: Path) -> None:
        """Airflow 3 simple auth manager: POST /auth/token {username, password} -> access_token.
        `standalone` (default `[core] simple_auth_manager_users = admin:admin`) generates the
        admin password into AIRFLOW_HOME/simple_auth_manager_passwords.json.generated."""
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        resp = self.http.post(
            f"{self.base}/auth/token", json={"username": "admin", "password": passwords["admin"]}, timeout=30
        )
        assert resp.status_code == 201, f"login failed: {resp.status_code} {resp.text}"
        self.http.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def task_instances(self, run_id: str) -> list[dict]:
        resp = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        resp.raise_for_status()
        return resp.json()["task_instances"]


def _wait(what: str, timeout: float, probe, log: Path, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except requests.RequestException as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(interval)
    pytest.fail(
        f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})\n"
        f"--- standalone log tail ---\n{_tail(log)}"
    )


def _describe(tis: list[dict], home: Path) -> str:
    lines = [
        f"  {ti['task_id']}[{ti['map_index']}] {ti.get('rendered_map_index')}: {ti['state']} "
        f"(try {ti.get('try_number')})"
        for ti in tis
    ]
    for ti in tis:
        if ti["state"] not in ("success", None):
            for path in sorted((home / "logs").glob(f"dag_id={DAG_ID}/**/task_id={ti['task_id']}/**/*.log")):
                lines.append(f"--- {path.relative_to(home)} ---\n{_tail(path, 40)}")
    return "\n".join(lines)


def test_standalone_runs_source_dag(samples_dir, tmp_path):
    home = tmp_path / "airflow_home"
    home.mkdir()
    output = tmp_path / "out"
    log = tmp_path / "standalone.log"
    port, worker_log_port, trigger_log_port = _free_ports(3)
    base = f"http://127.0.0.1:{port}"
    marker = secrets.token_hex(8)
    # Ray's sockets live under its temp dir: keep the path short (AF_UNIX paths stop at 107 bytes),
    # and private, so a task never joins another session's cluster via /tmp/ray/ray_current_cluster.
    ray_tmp = Path(tempfile.mkdtemp(prefix="mtray-"))
    env = airflow_env(
        home,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # standalone runs its parts as plain `airflow`
        NO_COLOR="1",
        MEDTRINITY_SAMPLES_DIR=str(samples_dir),
        MEDTRINITY_OUTPUT=str(output),
        MEDTRINITY_RAY_NUM_CPUS="2",
        RAY_TMPDIR=str(ray_tmp),
        MEDTRINITY_STANDALONE_TEST=marker,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        # tasks reach the Execution API at http://localhost:8080/execution/ unless told otherwise
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base}/execution/",
        # scheduler and triggerer serve their logs on fixed ports (8793, 8794) unless told otherwise
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_log_port),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
        AIRFLOW__CORE__PARALLELISM="4",  # LocalExecutor forks this many workers up front (default 32)
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="10",
        AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH=str(tmp_path / "bundles"),
    )
    for key in ("RAY_ADDRESS", "MEDTRINITY_RUNNER", "MEDTRINITY_SHARD_SIZE", "AIRFLOW_CONFIG"):
        env.pop(key, None)

    started = time.monotonic()
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        api = Api(base)

        def healthy():
            assert proc.poll() is None, f"standalone exited with {proc.returncode}:\n{_tail(log)}"
            return api.get("/api/v2/monitor/health").ok

        _wait("the API server's health endpoint", START_TIMEOUT, healthy, log)
        print(f"\nAPI server up after {time.monotonic() - started:.0f} s on port {port}")
        api.login(home)

        dag = _wait(f"DAG {DAG_ID}", DAG_TIMEOUT, lambda: (r := api.get(f"/api/v2/dags/{DAG_ID}")).ok and r.json(), log)
        print(f"DAG visible after {time.monotonic() - started:.0f} s")
        if dag["is_paused"]:
            api.http.patch(f"{base}/api/v2/dags/{DAG_ID}", json={"is_paused": False}, timeout=30).raise_for_status()

        resp = api.http.post(
            f"{base}/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"force": True}}, timeout=30
        )
        assert resp.status_code == 200, f"trigger failed: {resp.status_code} {resp.text}"
        run_id = resp.json()["dag_run_id"]

        def finished():
            run = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
            run.raise_for_status()
            state = run.json()["state"]
            if state in ("success", "failed"):
                return state
            # the DAG retries twice with a 30 s+ delay: stop at the first task failure instead
            if any(ti["state"] in ("up_for_retry", "failed") for ti in api.task_instances(run_id)):
                return "failed"
            return None

        state = _wait(f"run {run_id}", RUN_TIMEOUT, finished, log, interval=2)
        tis = api.task_instances(run_id)
        print(f"run {run_id}: {state} after {time.monotonic() - started:.0f} s\n{_describe(tis, home)}")
        assert state == "success", (
            f"run {run_id} {state}:\n{_describe(tis, home)}\n--- standalone log tail ---\n{_tail(log)}"
        )

        processes = sorted((ti for ti in tis if ti["task_id"] == "process"), key=lambda ti: ti["map_index"])
        assert processes, "no mapped process task instances"
        assert [ti["rendered_map_index"] for ti in processes] == [f"shard-{i:05d}" for i in range(len(processes))]
        assert all(ti["state"] == "success" for ti in tis)

        manifest_path = output / "sources" / SOURCE_ID / "manifest.json"
        assert manifest_path.is_file(), f"no manifest at {manifest_path}"
        counts = json.loads(manifest_path.read_text())["counts"]
        assert counts["inputs"] == counts["used"] + counts["rejected"], counts
        assert counts["produced"] == counts["records"] + counts["quarantined"], counts
        assert counts["rejected"] == BAD_INPUTS, counts
        assert counts["records"] > 0, counts
    finally:
        leaked = _stop(proc, marker)
        left = _session_processes(proc.pid, marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        print(
            f"standalone stopped after {time.monotonic() - started:.0f} s; "
            f"SIGKILLed after the grace period: {leaked or 'none'}"
        )
    assert not left, f"processes survived SIGKILL: {left}"
