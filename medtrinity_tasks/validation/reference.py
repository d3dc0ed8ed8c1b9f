"""Alignment of generated descriptions with the human text a source carries (reports, captions,
QA answers), the way MedTrinity checked its descriptions against human annotations.

Per record: ROUGE-L (F-measure of the longest common word subsequence, by Google's ``rouge-score``),
the cosine similarity of the two texts' sentence embeddings (the knowledge base's sentence model),
and agreement on what each names: modality, organ, laterality and disease, each counted only where
the human text names it. Scores describe; they do not gate: human reports say more and other things than a description.
"""

from __future__ import annotations

from functools import lru_cache

from medtrinity_tasks.validation.consistency import Vocabulary, named, own_text

ASPECTS = ("modality", "organ", "laterality", "disease")


@lru_cache(maxsize=1)
def _rouge_scorer():
    """Google's ROUGE-L scorer, unstemmed: its tokens are the lower-cased runs of letters and digits.
    Imported on first use, as it loads NLTK (about a second)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference``."""
    return float(_rouge_scorer().score(reference, candidate)["rougeL"].fmeasure)


def agreement(description: str, reference: str, vocab: Vocabulary) -> dict[str, bool | None]:
    """Per aspect: whether the description names something the reference names (None: the
    reference names nothing of that aspect)."""
    ours, theirs = named(description, vocab), named(reference, vocab)
    return {aspect: bool(ours[aspect] & theirs[aspect]) if theirs[aspect] else None for aspect in ASPECTS}


def score_references(rows: list[dict], vocab: Vocabulary, encoder=None) -> list[dict | None]:
    """Per row, its reference scores, or None where it has no human text. ``encoder`` (a
    ``DenseEncoder``) is built on first need: loading the sentence model costs seconds."""
    pairs = [(i, own_text(row), row["reference_text"]) for i, row in enumerate(rows) if row.get("reference_text")]
    scores: list[dict | None] = [None] * len(rows)
    if not pairs:
        return scores
    if encoder is None:
        from medtrinity_tasks.config import load_settings
        from medtrinity_tasks.knowledge.embeddings import DenseEncoder

        encoder = DenseEncoder(load_settings().embedding_model)
    vectors = encoder.encode([text for _, ours, theirs in pairs for text in (ours, theirs)])
    for n, (i, ours, theirs) in enumerate(pairs):
        agreed = agreement(ours, theirs, vocab)
        counted = [v for v in agreed.values() if v is not None]
        scores[i] = {
            "rouge_l": round(rouge_l(ours, theirs), 4),
            "similarity": round(float(vectors[2 * n] @ vectors[2 * n + 1]), 4),
            "agreement": round(sum(counted) / len(counted), 4) if counted else None,
            **{f"{aspect}_agrees": agreed[aspect] for aspect in ASPECTS},
        }
    return scores


def reference_totals(scores: list[dict | None]) -> dict:
    """The sums a source's summary is made of, for one shard's records (JSON, for its work record)."""
    scored = [s for s in scores if s]
    totals = {
        "records": len(scored),
        "rouge_l": sum(s["rouge_l"] for s in scored),
        "similarity": sum(s["similarity"] for s in scored),
    }
    for aspect in ASPECTS:
        counted = [s[f"{aspect}_agrees"] for s in scored if s[f"{aspect}_agrees"] is not None]
        totals[f"{aspect}_named"], totals[f"{aspect}_agreed"] = len(counted), sum(counted)
    return totals


def reference_summary(shard_totals: list[dict]) -> dict:
    """A source's scores in brief: how many records had human text, mean ROUGE-L and similarity,
    and per aspect the share of records (where the human text names it) that agree."""
    total = {key: sum(t.get(key, 0) for t in shard_totals) for key in reference_totals([])}
    n = total["records"]
    summary = {
        "records": n,
        "rouge_l": round(total["rouge_l"] / n, 4) if n else None,
        "similarity": round(total["similarity"] / n, 4) if n else None,
    }
    for aspect in ASPECTS:
        named_n = total[f"{aspect}_named"]
        summary[f"{aspect}_agreement"] = round(total[f"{aspect}_agreed"] / named_n, 4) if named_n else None
    return summary
