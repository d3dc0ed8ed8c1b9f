"""Shared fixtures: the sample sources on disk, settings pointing at them, a migrated Airflow home, and
the demo knowledge index for the tests that ask for it (the integration and system tiers do)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from medtrinity_tasks.sources.samples import SAMPLE_SOURCES
from tests.support.servers import BIN, airflow_env

INDEXED: list[Path] = []
"""The session's knowledge index, once a test has asked for it."""


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """Every sample source with its broken inputs, written once per test session: four CT phantoms
    (and four bad volumes), eight images or tiles per 2D source (and their bad files)."""
    root = tmp_path_factory.mktemp("samples")
    for source_id, write in SAMPLE_SOURCES.items():
        write(root, cases={"synthetic_ct_abdomen": 4, "synthetic_ct_dicom": 3}.get(source_id, 8), bad_inputs=True)
    return root


@pytest.fixture(scope="session")
def knowledge_dir(tmp_path_factory) -> Path:
    """The demo corpus indexed once per session into a local store that every run of the tests reads,
    in this process and in the Airflow and Ray processes they start (they inherit the environment).
    Building it loads torch and the sentence model, so only tests that run the pipeline ask for it."""
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.knowledge.index import index_corpus

    root = tmp_path_factory.mktemp("knowledge")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDTRINITY_KNOWLEDGE_DIR", str(root))
        index_corpus(None, "demo", load_settings())
        INDEXED.append(root)
        yield root
        INDEXED.clear()


@pytest.fixture
def settings_env(samples_dir, tmp_path, monkeypatch) -> dict:
    """Environment for a run: samples from the session's source, the knowledge index where the test's
    tier built one (else a folder with none, never the repository's), output in a fresh directory, and
    the test's own directory as MEDTRINITY_DATA_DIR, where a test stages the sources of its site
    catalog entries."""
    env = {
        "MEDTRINITY_SAMPLES_DIR": str(samples_dir),
        "MEDTRINITY_DATA_DIR": str(tmp_path),
        "MEDTRINITY_KNOWLEDGE_DIR": str(INDEXED[0] if INDEXED else tmp_path / "no-knowledge-index"),
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
