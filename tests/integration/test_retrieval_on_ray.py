"""The knowledge base: BM25 terms, idempotent and incremental indexing, hybrid retrieval, clear
errors for an unreachable server or a mismatched collection, retrieval on Ray, and the index DAG."""

from __future__ import annotations

import json
import sys

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.knowledge.index import DEMO_CORPUS
from medtrinity_tasks.run.pipeline import retrieval_stage

QUERIES = DEMO_CORPUS.parent / "queries.jsonl"


@pytest.mark.slow
def test_retrieval_runs_on_two_ray_workers_over_the_local_store(settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages import run_inprocess
    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    settings = load_settings()
    captions = [q["query"] for q in map(json.loads, QUERIES.read_text().splitlines()) if q["kind"] == "caption"]
    rows = [{"id": f"r{i}", "coarse_caption": captions[i % len(captions)]} for i in range(96)]
    stage = retrieval_stage(settings)
    stage.max_actors = 2  # three calls of 32 rows: both actors take their own copy of the store
    distributed = {row["id"]: row["knowledge"] for row in run_ray([stage], rows, settings)}
    local = {row["id"]: row["knowledge"] for row in run_inprocess([retrieval_stage(settings)], rows)}
    assert len(distributed) == 96 and all(distributed.values())
    assert {k: [p["id"] for p in v] for k, v in distributed.items()} == {
        k: [p["id"] for p in v] for k, v in local.items()
    }
