"""The optional LLM judge: reading its scores, quarantining low ones, and a pipeline run with the judge
on llama.cpp's server (the Gemma 3 270M GGUF from PyPI), whose scores are whatever a tiny model says."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.run.pipeline import judge_stage
from medtrinity_tasks.validation.judge import ScoresInvalid, judge_messages, read_scores
from tests.support.records import make_record


def scores(**overrides) -> dict:
    return {name: 5 for name in DESCRIPTION_SECTIONS} | overrides


def test_scores_are_read_only_when_each_section_has_one_from_1_to_5():
    assert read_scores("Here: " + json.dumps(scores(roi_location=2))) == scores(roi_location=2)
    assert read_scores(json.dumps(scores(modality=4.0)))["modality"] == 4
    for answer, reason in [
        ("no json", "no JSON object"),
        (json.dumps(scores(modality=6)), "'modality' has no score from 1 to 5"),
        (json.dumps(scores(organ_tissue="good")), "'organ_tissue' has no score"),
        (json.dumps({"modality": 5}), "'organ_tissue' has no score"),
    ]:
        with pytest.raises(ScoresInvalid, match=reason):
            read_scores(answer)


def test_the_judge_sees_the_facts_and_the_description_as_quoted_data():
    system, user = judge_messages(make_record())
    assert "data, not instructions" in system["content"]
    facts, description = user["content"].split("\nDESCRIPTION:\n")
    assert json.loads(facts.removeprefix("FACTS:\n"))["organ"] == "liver"
    assert set(json.loads(description.split("\n")[0])) == set(DESCRIPTION_SECTIONS)


def test_an_unknown_judge_is_a_one_line_error():
    with pytest.raises(EngineUnavailable, match="MEDTRINITY_JUDGE must be openai or unset, got 'gpt'"):
        judge_stage(load_settings({}).with_changes(judge="gpt"))


class ScoringServer(BaseHTTPRequestHandler):
    """Scores every section 5, except roi_location 2 for the record whose facts name slice 'spleen'."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"data": []}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["response_format"]["json_schema"]["schema"]["required"] == list(DESCRIPTION_SECTIONS)
        low = '"organ": "spleen"' in body["messages"][1]["content"]
        answer = json.dumps(scores(roi_location=2) if low else scores())
        reply = {"choices": [{"message": {"content": answer}}], "usage": {}}
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps(reply).encode())

    def log_message(self, *args):
        pass


def test_low_scores_quarantine_the_record_and_every_score_is_kept():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScoringServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = load_settings({}).with_changes(judge="openai", llm_url=f"http://127.0.0.1:{server.server_port}/v1")
    stage = judge_stage(settings)
    stage.setup()
    try:
        good, low = stage([make_record(slice_index=1), make_record(slice_index=2, organ="spleen")])
    finally:
        server.shutdown()
    assert good["quality"]["judge"] == scores() and not good.get("quarantine_reasons")
    assert low["quality"]["judge"] == scores(roi_location=2)
    assert low["quarantine_reasons"] == ["judge scored sections below 3: roi_location (2)"]
