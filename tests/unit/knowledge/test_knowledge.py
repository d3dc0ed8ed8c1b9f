"""The knowledge base: BM25 terms, idempotent and incremental indexing, hybrid retrieval, clear
errors for an unreachable server or a mismatched collection, retrieval on Ray, and the index DAG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import KnowledgeUnavailable
from medtrinity_tasks.knowledge.embeddings import DenseEncoder, bm25_document, bm25_query, term_index, terms
from medtrinity_tasks.knowledge.index import DEMO_CORPUS, KnowledgeConfig, index_corpus, knowledge_client, point_id
from medtrinity_tasks.knowledge.retrieval import (
    count_tokens,
    record_query,
    within_budget,
)

QUERIES = DEMO_CORPUS.parent / "queries.jsonl"


def corpus_lines(path: Path = DEMO_CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """Settings for a fresh local store of this test's own."""
    monkeypatch.setenv("MEDTRINITY_KNOWLEDGE_DIR", str(tmp_path / "store"))
    return load_settings()


def test_terms_fold_plurals_and_drop_stop_words_and_indices_are_stable():
    assert terms("The renal cysts of the kidneys") == ["renal", "cyst", "kidney"]
    assert term_index("cyst") == term_index("cyst") == 3315634555  # the same in every process and release
    indices, values = bm25_document("cyst cyst kidney")
    assert (
        dict(zip(indices, values, strict=True))[term_index("cyst")]
        > dict(zip(indices, values, strict=True))[term_index("kidney")]
    )  # a term said twice weighs more, but less than twice (saturation)
    assert bm25_query("cyst cysts kidney") == (sorted([term_index("cyst"), term_index("kidney")]), [1.0, 1.0])


def test_reindexing_is_an_idempotent_upsert_and_a_refresh_embeds_only_what_changed(store, tmp_path):
    first = index_corpus(None, "demo", store)
    assert first["indexed"] == first["chunks"] == first["points_in_collection"] == len(corpus_lines())
    again = index_corpus(None, "demo", store)
    assert (again["indexed"], again["unchanged"], again["points_in_collection"]) == (
        0,
        first["chunks"],
        first["chunks"],
    )
    with knowledge_client(KnowledgeConfig.from_settings(store)) as client:
        ids = {str(p.id) for p in client.scroll(store.knowledge_collection, limit=10_000)[0]}
    assert ids == {point_id("demo", line["id"]) for line in corpus_lines()}

    lines = corpus_lines()
    lines[1]["content"] += " Edited."
    lines.append(dict(lines[2], id="demo-new-00", content="A passage added later about the spleen."))
    changed = tmp_path / "changed.jsonl"
    changed.write_text("".join(json.dumps(line) + "\n" for line in lines))
    refresh = index_corpus(str(changed), "demo", store)
    assert (refresh["indexed"], refresh["points_in_collection"]) == (2, first["chunks"] + 1)


def test_bad_documents_are_counted_by_reason_and_the_rest_indexed(store, tmp_path):
    good = corpus_lines()[:5]
    lines = [json.dumps(line) for line in good]
    lines += ["{broken", json.dumps(good[0]), json.dumps(dict(good[0], id="x-empty", content="  ", contents=""))]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = index_corpus(str(path), "bad", store)
    assert result["indexed"] == 5
    assert result["rejected_by_reason"] == {"malformed JSON line": 1, "duplicate document": 1, "empty document": 1}


def test_the_record_query_and_the_token_budget():
    row = {
        "coarse_caption": "Axial computed tomography (CT) slice of the abdomen showing the kidney.",
        "rois": [{"label": "renal cyst", "location": "in the left kidney", "texture": "hypodense", "shape": "round"}],
        "diseases": ["renal cyst"],
    }
    query = record_query(row)
    assert "renal cyst in the left kidney; hypodense, round" in query and query.startswith("Axial computed")
    passages = [{"id": str(i), "text": "Cysts are common. " * 10} for i in range(3)]  # 40 tokens each
    kept = within_budget(passages, 110)
    assert [p["id"] for p in kept] == ["0", "1", "2"] and count_tokens(kept[2]["text"]) <= 30
    assert kept[2]["text"].endswith("common.")  # cut at a sentence end
    assert [p["id"] for p in within_budget(passages, 90)] == ["0", "1"]  # 10 tokens left: too short to keep


def test_a_collection_built_with_another_embedding_size_is_refused_with_what_to_do(store):
    from qdrant_client import models

    with knowledge_client(KnowledgeConfig.from_settings(store), write=True) as client:
        client.create_collection(
            store.knowledge_collection,
            vectors_config={"dense": models.VectorParams(size=8, distance=models.Distance.COSINE)},
            sparse_vectors_config={"bm25": models.SparseVectorParams(modifier=models.Modifier.IDF)},
        )
    with pytest.raises(KnowledgeUnavailable, match="holds 8-dimensional vectors but the embedding model .* makes 384"):
        index_corpus(None, "demo", store)


def test_an_unreachable_server_and_a_missing_collection_are_one_line_errors(store):
    url = "http://127.0.0.1:9"
    with pytest.raises(KnowledgeUnavailable, match=f"Qdrant at {url} is not reachable.*start the server"):
        with knowledge_client(KnowledgeConfig.from_settings(store.with_changes(qdrant_url=url))):
            pass
    with pytest.raises(KnowledgeUnavailable, match="no knowledge collection 'medtrinity_knowledge' in the local store"):
        with knowledge_client(KnowledgeConfig.from_settings(store)):
            pass


def test_a_reader_waits_for_the_index_run_that_holds_the_local_store_then_says_so(store, monkeypatch):
    import medtrinity_tasks.knowledge.index as index

    index_corpus(str(DEMO_CORPUS), "demo", store)
    monkeypatch.setattr(index, "LOCK_WAIT_S", 0.5)
    knowledge = KnowledgeConfig.from_settings(store)
    with knowledge_client(knowledge, write=True):  # an index run holds the directory
        with pytest.raises(KnowledgeUnavailable, match="held by an index run for over 0.5 s"):
            with knowledge_client(knowledge):
                pass
    with knowledge_client(knowledge) as client:  # and once it is done, readers get their copy
        assert client.count(store.knowledge_collection).count == len(corpus_lines())


def test_a_missing_local_embedding_model_says_what_to_put_where(store, tmp_path):
    with pytest.raises(KnowledgeUnavailable, match=f"no sentence-embedding model at {tmp_path}.*config.json"):
        DenseEncoder(tmp_path)
