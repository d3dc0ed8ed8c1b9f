"""A real `airflow standalone` with the project's DAGs and plugin: the sample source's DAG driven
through the REST API, the dataset DAG run by the scheduler on the asset that run publishes, and the
dataset browser plugin in headless Chromium (Playwright) behind Airflow's login.

Standalone runs in its own session (``start_new_session=True``) with a fresh Airflow home, a free
loopback port and an isolated Ray temp dir, once for the module. The tests log in the way the UI
does with the simple auth manager (user ``admin``, password from the
``simple_auth_manager_passwords.json.generated`` file standalone writes in the Airflow home).
Whatever happens, every process of that session is stopped: SIGTERM to the group, then SIGKILL.
The browser test keeps a screenshot in ``test-artifacts/`` (``MEDTRINITY_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from tests.support import SOURCE_ID
from tests.support.servers import BIN, REPO, airflow_env

DAG_ID = f"medtrinity__{SOURCE_ID}"
ARTIFACTS = Path(os.environ.get("MEDTRINITY_TEST_ARTIFACTS", REPO / "test-artifacts"))
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

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        resp = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
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


def _describe(dag_id: str, tis: list[dict], home: Path) -> str:
    lines = [
        f"  {ti['task_id']}[{ti['map_index']}] {ti.get('rendered_map_index')}: {ti['state']} "
        f"(try {ti.get('try_number')})"
        for ti in tis
    ]
    for ti in tis:
        if ti["state"] not in ("success", None):
            for path in sorted((home / "logs").glob(f"dag_id={dag_id}/**/task_id={ti['task_id']}/**/*.log")):
                lines.append(f"--- {path.relative_to(home)} ---\n{_tail(path, 40)}")
    return "\n".join(lines)


@dataclass
class Standalone:
    base: str
    home: Path
    output: Path
    log: Path
    env: dict
    api: Api
    started: float


@pytest.fixture(scope="module")
def standalone(samples_dir, tmp_path_factory):
    """A running `airflow standalone` with the project's DAGs and plugins, logged in over the API."""
    tmp_path = tmp_path_factory.mktemp("standalone")
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
        yield Standalone(base=base, home=home, output=output, log=log, env=env, api=api, started=started)
    finally:
        leaked = _stop(proc, marker)
        left = _session_processes(proc.pid, marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        print(
            f"standalone stopped after {time.monotonic() - started:.0f} s; "
            f"SIGKILLed after the grace period: {leaked or 'none'}"
        )
    assert not left, f"processes survived SIGKILL: {left}"


def _trigger_and_wait(standalone: Standalone, dag_id: str, conf: dict) -> tuple[str, str]:
    api, base = standalone.api, standalone.base
    dag = _wait(f"DAG {dag_id}", DAG_TIMEOUT, lambda: (r := api.get(f"/api/v2/dags/{dag_id}")).ok and r.json(),
                standalone.log)  # fmt: skip
    print(f"DAG {dag_id} visible after {time.monotonic() - standalone.started:.0f} s")
    if dag["is_paused"]:
        api.http.patch(f"{base}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30).raise_for_status()
    resp = api.http.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, timeout=30)
    assert resp.status_code == 200, f"trigger failed: {resp.status_code} {resp.text}"
    run_id = resp.json()["dag_run_id"]

    def finished():
        run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        run.raise_for_status()
        state = run.json()["state"]
        if state in ("success", "failed"):
            return state
        # the DAG retries twice with a 30 s+ delay: stop at the first task failure instead
        if any(ti["state"] in ("up_for_retry", "failed") for ti in api.task_instances(dag_id, run_id)):
            return "failed"
        return None

    return run_id, _wait(f"run {run_id}", RUN_TIMEOUT, finished, standalone.log, interval=2)


def test_standalone_runs_source_dag_and_the_dataset_dag_follows_its_asset(standalone):
    api = standalone.api
    run_id, state = _trigger_and_wait(standalone, DAG_ID, {"force": True})
    tis = api.task_instances(DAG_ID, run_id)
    print(f"run {run_id}: {state} after {time.monotonic() - standalone.started:.0f} s\n"
          f"{_describe(DAG_ID, tis, standalone.home)}")  # fmt: skip
    assert state == "success", (
        f"run {run_id} {state}:\n{_describe(DAG_ID, tis, standalone.home)}\n"
        f"--- standalone log tail ---\n{_tail(standalone.log)}"
    )

    processes = sorted((ti for ti in tis if ti["task_id"] == "process"), key=lambda ti: ti["map_index"])
    assert processes, "no mapped process task instances"
    assert [ti["rendered_map_index"] for ti in processes] == [f"shard-{i:05d}" for i in range(len(processes))]
    assert all(ti["state"] == "success" for ti in tis)

    manifest_path = standalone.output / "sources" / SOURCE_ID / "manifest.json"
    assert manifest_path.is_file(), f"no manifest at {manifest_path}"
    counts = json.loads(manifest_path.read_text())["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"], counts
    assert counts["produced"] == counts["records"] + counts["quarantined"], counts
    assert counts["rejected"] == BAD_INPUTS, counts
    assert counts["records"] > 0, counts

    # publish emitted the source's asset; the scheduler runs the dataset DAG on it, untriggered
    def dataset_run():
        runs = api.get("/api/v2/dags/medtrinity_dataset/dagRuns").json()["dag_runs"]
        done = [run for run in runs if run["run_type"] == "asset_triggered" and run["state"] in ("success", "failed")]
        return done[0] if done else None

    run = _wait("an asset-triggered medtrinity_dataset run", RUN_TIMEOUT, dataset_run, standalone.log, interval=2)
    assert run["state"] == "success", _describe("medtrinity_dataset", api.task_instances("medtrinity_dataset",
                                                run["dag_run_id"]), standalone.home)  # fmt: skip
    dataset = json.loads((standalone.output / "dataset" / "manifest.json").read_text())
    assert [source["source_id"] for source in dataset["sources"]] == [SOURCE_ID]
    assert dataset["records"] == counts["records"]


def test_dataset_browser_in_the_airflow_ui_behind_its_login(standalone):
    """Log in on Airflow's own page in headless Chromium, open the plugin's entry in the UI's
    navigation, and see a sample image with its ROI drawn; a screenshot is kept as an artifact."""
    from playwright.sync_api import sync_playwright

    from medtrinity_tasks.roi.overlay import roi_colour

    chromium = os.environ.get("MEDTRINITY_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).is_file():
        pytest.skip(
            f"no Chromium at {chromium}: `apt-get install chromium` (make test does) or set MEDTRINITY_CHROMIUM"
        )
    source_id = "synthetic_chest_xray"  # boxes from a CSV, one of them outside its image (quarantined)
    subprocess.run([str(BIN / "medtrinity"), "run", source_id], env=dict(standalone.env, MEDTRINITY_RUNNER="inprocess"),
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    shard = next((standalone.output / "sources" / source_id / "shards").glob("*.parquet"))
    with_roi = next(r for r in pq.read_table(shard, columns=["id", "rois"]).to_pylist() if r["rois"])

    # not logged in: pages go to Airflow's login, anything else is refused
    page_url = f"{standalone.base}/medtrinity/sources/{source_id}"
    anonymous = requests.get(page_url, headers={"accept": "text/html"}, allow_redirects=False, timeout=30)
    assert anonymous.status_code == 303 and "/auth/login?next=" in anonymous.headers["location"]
    assert requests.get(page_url, timeout=30).status_code == 401

    password = json.loads((standalone.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_url)
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(page_url, timeout=30_000)  # back where the login began

            page.goto(f"{standalone.base}/")
            page.get_by_role("button", name="Browse").click()
            page.get_by_role("menuitem", name="Dataset browser").click()
            browser_frame = page.frame_locator("iframe")
            browser_frame.locator(f'tr[data-source="{source_id}"] a').first.click()
            image = browser_frame.locator(f'[data-record="{with_roi["id"]}"] img')
            image.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            assert (
                with_roi["rois"][0]["location"]
                in browser_frame.locator(f'[data-record="{with_roi["id"]}"]').inner_text()
            )
            shown = np.asarray(Image.open(io.BytesIO(image.screenshot())).convert("RGB")).astype(int)
            page.screenshot(path=str(ARTIFACTS / "dataset-browser.png"))
        finally:
            browser.close()
    near_roi_colour = (np.abs(shown - np.array(roi_colour(0))).max(axis=-1) < 40).sum()
    print(f"dataset browser screenshot: {ARTIFACTS / 'dataset-browser.png'}; ROI-coloured pixels: {near_roi_colour}")
    assert near_roi_colour > 20, "the record's image is shown without its ROI drawn"
