"""The optional LLM judge: reading its scores, quarantining low ones, and a pipeline run with the judge
on llama.cpp's server (the Gemma 3 270M GGUF from PyPI), whose scores are whatever a tiny model says."""

from __future__ import annotations

import pytest

from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from tests.support.servers import start_llama_server


@pytest.mark.slow
def test_a_run_with_the_judge_on_llama_cpp_scores_or_quarantines_every_record(
    gemma_model,
    settings_env,
    tmp_path,
    monkeypatch,
):
    import pyarrow.parquet as pq

    from medtrinity_tasks.run.local import run_source

    server, url, _ = start_llama_server(gemma_model, tmp_path)
    for key, value in {
        "MEDTRINITY_JUDGE": "openai",
        "MEDTRINITY_JUDGE_MIN_SCORE": "1",  # any score the model gives passes: the run shows the accounting
        "MEDTRINITY_LLM_URL": url,
        "MEDTRINITY_LLM_RESPONSE_FORMAT": "json_object",
        "MEDTRINITY_LLM_MAX_TOKENS": "64",
        "MEDTRINITY_LLM_CONCURRENCY": "1",  # llama.cpp answers one at a time: time-outs measure generation only
        "MEDTRINITY_LLM_TIMEOUT_S": "600",  # room for a loaded two-core machine
    }.items():
        monkeypatch.setenv(key, value)
    try:
        result = run_source("synthetic_dermoscopy", engine="template", progress=lambda line: None)
    except Exception as exc:  # a tiny model may fail the gate: the accounting must still hold
        from medtrinity_tasks.run.publish import GateFailed

        assert isinstance(exc, GateFailed), exc
        result = None
    finally:
        server.terminate()
        server.wait(timeout=30)
    source = tmp_path / "out" / "sources" / "synthetic_dermoscopy"
    records = [r for path in (source / "shards").glob("*.parquet") for r in pq.read_table(path).to_pylist()]
    quarantined = [r for path in (source / "quarantine").glob("*.parquet") for r in pq.read_table(path).to_pylist()]
    assert len(records) + len(quarantined) == 8  # every usable dermoscopy image: scored or quarantined
    for record in records:
        assert set(record["quality"]["judge"]) == set(DESCRIPTION_SECTIONS)
        assert all(1 <= n <= 5 for n in record["quality"]["judge"].values())
    assert all(q["quarantine_reasons"][0].startswith("judge_failed: ") for q in quarantined)
    if result is not None:
        assert result["counts"]["records"] == len(records)
