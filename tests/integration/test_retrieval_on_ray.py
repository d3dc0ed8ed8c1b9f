"""Retrieval over the demo knowledge index: the labelled queries find their passages, in process and
from the retrieval stage on two Ray workers."""

from __future__ import annotations

import json
import sys

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.knowledge.embeddings import DenseEncoder
from medtrinity_tasks.knowledge.index import DEMO_CORPUS, KnowledgeConfig, knowledge_client
from medtrinity_tasks.knowledge.retrieval import search
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


def test_hybrid_retrieval_finds_the_expected_passages(knowledge_dir):
    knowledge = KnowledgeConfig.from_settings(load_settings())
    encoder = DenseEncoder(knowledge.embedding_model)
    queries = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    with knowledge_client(knowledge) as client:
        found = search(client, knowledge.collection, encoder, [q["query"] for q in queries], 10)
    hits = [
        bool(set(q["relevant"]) & {p["id"] for p in passages[:5]}) for q, passages in zip(queries, found, strict=True)
    ]
    assert sum(map(bool, hits)) / len(hits) >= 0.8  # four in five queries find a relevant passage in their top five
    assert all(p["corpus"] == "demo" and p["title"] and p["text"] for passages in found for p in passages)
