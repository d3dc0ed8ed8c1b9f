"""The knowledge base: BM25 terms, idempotent and incremental indexing, hybrid retrieval, clear
errors for an unreachable server or a mismatched collection, retrieval on Ray, and the index DAG."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.servers import BIN, airflow_env


@pytest.mark.airflow
@pytest.mark.slow
def test_the_index_dag_builds_a_corpus_and_reports_its_counts(airflow_home, tmp_path):
    corpus = tmp_path / "textbook"
    corpus.mkdir()
    (corpus / "kidney.md").write_text("# The kidney\n\nThe kidneys filter blood.\n\nRenal cysts are common.\n")
    (corpus / "empty.txt").write_text("   \n")
    env = airflow_env(airflow_home, MEDTRINITY_KNOWLEDGE_DIR=str(tmp_path / "store"))
    conf = json.dumps({"corpus": "textbooks", "location": str(corpus)})
    done = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "medtrinity_knowledge_index", "-c", conf],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = done.stdout + done.stderr
    finished = next(line for line in log.splitlines() if "DagRun Finished" in line)
    assert "state=success" in finished, log[-4000:]
    assert "textbooks: 2 documents, 1 chunks (1 indexed, 0 unchanged), 1 rejected" in log
    assert "rejected: 1 x empty document" in log
