"""Shared fixtures: a sample source on disk, settings pointing at it, and a migrated Airflow home."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medtrinity_tasks.sources.samples import SAMPLE_SOURCES

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCE_ID = "synthetic_ct_abdomen"


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released), for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """Every sample source with its broken inputs, written once per test session: four CT phantoms
    (and four bad volumes), eight images or tiles per 2D source (and their bad files)."""
    root = tmp_path_factory.mktemp("samples")
    for source_id, write in SAMPLE_SOURCES.items():
        write(root, cases={"synthetic_ct_abdomen": 4, "synthetic_ct_dicom": 3}.get(source_id, 8), bad_inputs=True)
    return root


@pytest.fixture(scope="session", autouse=True)
def knowledge_dir(tmp_path_factory) -> Path:
    """The demo corpus indexed once per session into a local store that every run of the tests reads,
    in this process and in the Airflow and Ray processes they start (they inherit the environment)."""
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.knowledge.index import index_corpus

    root = tmp_path_factory.mktemp("knowledge")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDTRINITY_KNOWLEDGE_DIR", str(root))
        index_corpus(None, "demo", load_settings())
        yield root


@pytest.fixture
def settings_env(samples_dir, knowledge_dir, tmp_path, monkeypatch) -> dict:
    """Environment for a run: samples from the session's source, its knowledge index, output in a
    fresh directory, and the test's own directory as MEDTRINITY_DATA_DIR, where a test stages the
    sources of its site catalog entries."""
    env = {
        "MEDTRINITY_SAMPLES_DIR": str(samples_dir),
        "MEDTRINITY_DATA_DIR": str(tmp_path),
        "MEDTRINITY_KNOWLEDGE_DIR": str(knowledge_dir),
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_RAY_NUM_CPUS": "2",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """A project-shaped Airflow home on SQLite, migrated once per session."""
    home = tmp_path_factory.mktemp("airflow_home")
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=airflow_env(home), check=True, capture_output=True)
    return home


def airflow_env(home: Path, **extra: str) -> dict:
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
