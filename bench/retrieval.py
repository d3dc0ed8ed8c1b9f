"""Retrieval benchmark: recall and MRR of dense, sparse (BM25) and hybrid retrieval on the demo
corpus's labelled query set, and queries per second.

Run from the repository root:  .venv/bin/python bench/retrieval.py   (or `make bench`)

The demo corpus (knowledge/demo/corpus.jsonl) is indexed into a fresh local store in a temporary
directory. Each query of knowledge/demo/queries.jsonl lists every passage that answers it. For each
mode: recall@k (the share of a query's relevant passages in its top k, averaged over queries) at 5
and 10, and MRR (1 / rank of the first relevant passage); per query kind (keyword, paraphrase,
caption) as well. Queries per second: each query searched on its own (encoding included), as the
retrieval stage would for one record, best of REPEATS passes.

The last line is
    BENCH retrieval hybrid_recall_10=... dense_recall_10=... sparse_recall_10=... hybrid_mrr=...
        hybrid_qps=... target=hybrid_beats_both PASS|MISS
PASS when hybrid recall@10 is above both single retrievers'.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

TMP = Path(tempfile.mkdtemp(prefix="medtrinity-bench-retrieval-"))
os.environ["MEDTRINITY_KNOWLEDGE_DIR"] = str(TMP / "store")
os.environ.pop("QDRANT_URL", None)
warnings.filterwarnings("ignore")
logging.basicConfig(level=logging.WARNING)

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.knowledge.embeddings import DenseEncoder
from medtrinity_tasks.knowledge.index import DEMO_CORPUS, KnowledgeConfig, index_corpus, knowledge_client
from medtrinity_tasks.knowledge.retrieval import MODES, search

REPEATS = 3


def scores(queries: list[dict], found: list[list[dict]]) -> dict[str, float]:
    recall5, recall10, reciprocal = [], [], []
    for query, passages in zip(queries, found, strict=True):
        relevant, ranked = set(query["relevant"]), [p["id"] for p in passages]
        recall5.append(len(relevant & set(ranked[:5])) / len(relevant))
        recall10.append(len(relevant & set(ranked[:10])) / len(relevant))
        reciprocal.append(next((1 / rank for rank, pid in enumerate(ranked, 1) if pid in relevant), 0.0))
    n = len(queries)
    return {"recall_5": sum(recall5) / n, "recall_10": sum(recall10) / n, "mrr": sum(reciprocal) / n}


def main() -> None:
    settings = load_settings()
    built = index_corpus(None, "demo", settings)
    queries = [json.loads(line) for line in (DEMO_CORPUS.parent / "queries.jsonl").read_text().splitlines() if line]
    print(f"indexed {built['points_in_collection']} passages; {len(queries)} labelled queries")
    knowledge = KnowledgeConfig.from_settings(settings)
    encoder = DenseEncoder(knowledge.embedding_model)
    results, qps = {}, {}
    with knowledge_client(knowledge) as client:
        for mode in MODES:
            found = search(client, knowledge.collection, encoder, [q["query"] for q in queries], 10, mode)
            results[mode] = scores(queries, found)
            by_kind = defaultdict(list)
            for query, passages in zip(queries, found, strict=True):
                by_kind[query["kind"]].append((query, passages))
            kinds = ", ".join(
                f"{kind} {scores([q for q, _ in pairs], [p for _, p in pairs])['recall_10']:.3f}"
                for kind, pairs in sorted(by_kind.items())
            )
            best = float("inf")
            for _ in range(REPEATS):
                started = time.perf_counter()
                for query in queries:
                    search(client, knowledge.collection, encoder, [query["query"]], 10, mode)
                best = min(best, time.perf_counter() - started)
            qps[mode] = len(queries) / best
            r = results[mode]
            print(
                f"{mode:7} recall@5 {r['recall_5']:.3f}  recall@10 {r['recall_10']:.3f}  MRR {r['mrr']:.3f}  "
                f"{qps[mode]:.0f} queries/s  (recall@10 by kind: {kinds})"
            )
    hybrid, dense, sparse = (results[m]["recall_10"] for m in ("hybrid", "dense", "sparse"))
    ok = hybrid > dense and hybrid > sparse
    print(
        f"BENCH retrieval hybrid_recall_10={hybrid:.3f} dense_recall_10={dense:.3f} sparse_recall_10={sparse:.3f} "
        f"hybrid_recall_5={results['hybrid']['recall_5']:.3f} hybrid_mrr={results['hybrid']['mrr']:.3f} "
        f"hybrid_qps={qps['hybrid']:.0f} target=hybrid_beats_both {'PASS' if ok else 'MISS'}"
    )


if __name__ == "__main__":
    main()
