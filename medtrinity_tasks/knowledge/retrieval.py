"""Retrieval: the passages a record's description is grounded in, the MedRAG way.

A record's query is its coarse caption and its ROI facts (label, location, look). Hybrid search runs
one ``query_points`` request per record: a dense and a BM25 prefetch, fused by reciprocal rank
fusion. The top passages go into the record's ``knowledge`` field, in rank order, until the record's
token budget is spent (the passage that crosses it is cut at a sentence end).
"""

from __future__ import annotations

import contextlib
import re

from medtrinity_tasks.config import Settings
from medtrinity_tasks.knowledge.embeddings import SENTENCE_TRANSFORMERS, DenseEncoder, bm25_query
from medtrinity_tasks.knowledge.index import (
    DENSE,
    QDRANT_CLIENT,
    SPARSE,
    KnowledgeConfig,
    check_collection,
    knowledge_client,
)
from medtrinity_tasks.stages.base import Resources, Stage

MODES = ("dense", "sparse", "hybrid")
PREFETCH = 50
"""Candidates each retriever hands to the fusion."""
FUSION_WEIGHTS = [1.0, 0.5]
"""Reciprocal rank fusion's weights of the dense and the BM25 ranking. BM25 finds exact terms (codes,
numbers, names) but misses a question asked in other words; equal weights let those misses push
dense hits out of the top ten (bench/retrieval.py on the demo query set: recall@10 0.800 with equal
weights, below dense alone at 0.812; 0.824 with BM25 at half weight)."""
MIN_PASSAGE_TOKENS = 24
"""A passage cut shorter than this to fit the budget is left out instead."""
MAX_QUERY_ROIS = 3
_TOKEN = re.compile(r"\w+|[^\w\s]")


def record_query(row: dict) -> str:
    """The coarse caption and the facts of the record's largest ROIs, in words."""
    parts = [row.get("coarse_caption") or ""]
    for roi in (row.get("rois") or [])[:MAX_QUERY_ROIS]:
        look = ", ".join(w for w in (roi.get("texture"), roi.get("shape"), roi.get("margin")) if w)
        parts.append(f"{roi['label']} {roi.get('organ_location') or roi.get('location') or ''}; {look}".strip())
    if row.get("diseases"):
        parts.append("Findings: " + ", ".join(row["diseases"]))
    return " ".join(p for p in parts if p)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to what an LLM's tokenizer counts for English prose."""
    return len(_TOKEN.findall(text))


def within_budget(passages: list[dict], budget: int) -> list[dict]:
    out, left = [], budget
    for passage in passages:
        tokens = list(_TOKEN.finditer(passage["text"]))
        if len(tokens) <= left:
            out.append(passage)
            left -= len(tokens)
            continue
        if left >= MIN_PASSAGE_TOKENS:
            head = passage["text"][: tokens[left - 1].end()]
            sentence_end = max(head.rfind(". "), head.rfind(".\n"))
            text = head[: sentence_end + 1] if sentence_end >= len(head) // 2 else head + " …"
            out.append(dict(passage, text=text))
        break
    return out


def search(client, collection: str, encoder: DenseEncoder, queries: list[str], limit: int, mode: str = "hybrid"):
    """The top ``limit`` passages per query: dense, sparse (BM25), or both fused by reciprocal rank."""
    from qdrant_client import models

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    dense = encoder.encode(queries).tolist() if mode != "sparse" else [None] * len(queries)
    requests = []
    for query, vector in zip(queries, dense, strict=True):
        indices, values = bm25_query(query)
        candidates = []
        if mode != "sparse":
            candidates.append(models.Prefetch(query=vector, using=DENSE, limit=PREFETCH))
        if mode != "dense" and indices:
            sparse = models.SparseVector(indices=indices, values=values)
            candidates.append(models.Prefetch(query=sparse, using=SPARSE, limit=PREFETCH))
        if len(candidates) == 2:
            fusion = models.RrfQuery(rrf=models.Rrf(weights=FUSION_WEIGHTS))
            request = models.QueryRequest(prefetch=candidates, query=fusion, limit=limit, with_payload=True)
        elif candidates:  # one retriever: its own ranking
            request = models.QueryRequest(
                query=candidates[0].query, using=candidates[0].using, limit=limit, with_payload=True
            )
        else:  # BM25 alone, and the query has no term to look for
            request = None
        requests.append(request)
    asked = [r for r in requests if r is not None]
    answers = iter(client.query_batch_points(collection, requests=asked) if asked else [])
    return [[_passage(point) for point in next(answers).points] if r is not None else [] for r in requests]


def _passage(point) -> dict:
    payload = point.payload or {}
    return {
        "id": payload.get("chunk_id"),
        "corpus": payload.get("corpus"),
        "title": payload.get("title"),
        "score": float(point.score),
        "text": payload.get("text") or "",
    }


def check_knowledge(settings: Settings) -> None:
    """Fail now, with what to do, if the records' knowledge base cannot be searched."""
    knowledge = KnowledgeConfig.from_settings(settings)
    with knowledge_client(knowledge) as client:
        check_collection(client, knowledge, DenseEncoder(knowledge.embedding_model))


class RetrieveKnowledge(Stage):
    """Adds each record's retrieved passages. Runs as actors: each loads the sentence model and
    opens the knowledge base once (in local mode, its own copy of the store)."""

    name = "retrieve_knowledge"
    version = "1"
    batch_size = 32
    resources = Resources(cpus=1.0)
    max_actors = 1
    reads = ("coarse_caption", "rois", "diseases")
    writes = ("knowledge",)
    requires = (SENTENCE_TRANSFORMERS, QDRANT_CLIENT)

    def __init__(self, knowledge: KnowledgeConfig, *, top_k: int, tokens: int):
        """``top_k`` passages are retrieved per record, and kept within ``tokens`` (words and punctuation)."""
        self.knowledge = knowledge
        self.top_k, self.tokens = top_k, tokens

    def setup(self) -> None:
        self.encoder = DenseEncoder(self.knowledge.embedding_model)
        self._held = contextlib.ExitStack()  # the client (and a local store's copy) live as long as the worker
        self.client = self._held.enter_context(knowledge_client(self.knowledge))
        check_collection(self.client, self.knowledge, self.encoder)

    def process_batch(self, rows: list[dict]) -> list[dict]:
        queries = [record_query(row) for row in rows]
        found = search(self.client, self.knowledge.collection, self.encoder, queries, self.top_k)
        return [
            dict(row, knowledge=within_budget(passages, self.tokens)) for row, passages in zip(rows, found, strict=True)
        ]
