"""The knowledge index: one Qdrant collection of passages, each with a dense and a BM25 vector.

Point ids are UUIDs derived from (corpus, chunk id), so indexing a corpus again is an idempotent
upsert; each point keeps a hash of its text, so a refresh embeds only new or changed chunks, and an
interrupted run resumes where it stopped. Production talks to a Qdrant server (QDRANT_URL); the
embedded default is qdrant-client's local mode in a directory, which one process may own at a time:
a writer opens the directory itself, and every reader (each Ray worker, each Airflow task) opens a
private copy taken under the directory's lock, so parallel readers never fight over it.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import KnowledgeUnavailable
from medtrinity_tasks.knowledge.corpus import Chunk, CorpusReader
from medtrinity_tasks.knowledge.embeddings import DenseEncoder, bm25_document
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.stages.base import Requirement, require

log = project_logger(__name__)  # de-identified log lines
DENSE, SPARSE = "dense", "bm25"
BM25_VERSION = "bm25-k1.2-b0.75-avg100-s-stemmer"
"""Names how the sparse vectors are computed (embeddings.py); a collection built otherwise is refused."""
ID_NAMESPACE = uuid.UUID("6b0c52a4-3f1e-4d55-9a57-5e2f3c8d1a10")
LOCK_WAIT_S = 120
DEMO_CORPUS = Path(__file__).parent / "demo" / "corpus.jsonl"
QDRANT_CLIENT = Requirement("qdrant_client", "knowledge", KnowledgeUnavailable, "qdrant-client")


@dataclass(frozen=True)
class KnowledgeConfig:
    """Where the knowledge base is and the sentence model it was built with: what searching it takes of the
    settings."""

    qdrant_url: str | None
    """A Qdrant server; None: the local store in ``store_dir``."""
    qdrant_api_key: str | None = field(repr=False)
    store_dir: Path
    collection: str
    embedding_model: Path | None
    """A local sentence-transformers directory; None: the packaged MiniLM."""

    @classmethod
    def from_settings(cls, settings: Settings) -> KnowledgeConfig:
        return cls(
            qdrant_url=settings.qdrant_url,
            qdrant_api_key=settings.qdrant_api_key,
            store_dir=settings.knowledge_dir,
            collection=settings.knowledge_collection,
            embedding_model=settings.embedding_model,
        )


def point_id(corpus: str, chunk_id: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{corpus}/{chunk_id}"))


def where(knowledge: KnowledgeConfig) -> str:
    return knowledge.qdrant_url or f"the local store {knowledge.store_dir}"


@contextlib.contextmanager
def knowledge_client(knowledge: KnowledgeConfig, *, write: bool = False) -> Iterator:
    """A client of the server, or of the local store (the directory itself to write, a private copy to read)."""
    require("the knowledge base", [QDRANT_CLIENT])
    from qdrant_client import QdrantClient

    if knowledge.qdrant_url:
        client = QdrantClient(url=knowledge.qdrant_url, api_key=knowledge.qdrant_api_key, timeout=30)
        try:
            client.get_collections()
        except Exception as exc:
            raise KnowledgeUnavailable(
                f"Qdrant at {knowledge.qdrant_url} is not reachable ({type(exc).__name__}: {exc}); start the server "
                f"(e.g. docker run -p 6333:6333 qdrant/qdrant) or unset QDRANT_URL to use the local store"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    folder = knowledge.store_dir
    with contextlib.ExitStack() as stack:
        if write:
            folder.mkdir(parents=True, exist_ok=True)
            with _folder_lock(folder):
                pass  # a reader taking its copy finishes first
            path = folder
        else:
            copy = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medtrinity-knowledge-")))
            _copy_collection(folder, knowledge.collection, copy)
            path = copy
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as exc:  # another process owns the directory
            raise KnowledgeUnavailable(
                f"the local knowledge store {folder} is open in another process ({exc}); wait for that index run "
                "to finish, or use a Qdrant server (QDRANT_URL) for concurrent writers"
            ) from None
        try:
            yield client
        finally:
            client.close()


def _folder_lock(folder: Path):
    """The lock qdrant-client's local mode takes on its directory."""
    import portalocker

    return portalocker.Lock(folder / ".lock", mode="a", timeout=LOCK_WAIT_S)


def _copy_collection(folder: Path, collection: str, copy: Path) -> None:
    source = folder / "collection" / collection
    if not source.is_dir():
        raise KnowledgeUnavailable(
            f"no knowledge collection {collection!r} in the local store {folder}: build it with "
            "`medtrinity knowledge index` (the demo corpus by default) or the medtrinity_knowledge_index DAG"
        )
    import portalocker

    try:
        with _folder_lock(folder):
            shutil.copy2(folder / "meta.json", copy / "meta.json")
            shutil.copytree(source, copy / "collection" / collection)
    except portalocker.LockException:
        raise KnowledgeUnavailable(
            f"the local knowledge store {folder} has been held by an index run for over {LOCK_WAIT_S} s; run "
            "again when it has finished, or use a Qdrant server (QDRANT_URL) to index and search at once"
        ) from None


def check_collection(client, knowledge: KnowledgeConfig, encoder: DenseEncoder) -> None:
    """Refuse a collection the encoders here cannot search: missing, or built with another model."""
    name = knowledge.collection
    if not client.collection_exists(name):
        raise KnowledgeUnavailable(
            f"no knowledge collection {name!r} at {where(knowledge)}: build it with `medtrinity knowledge index` "
            "or the medtrinity_knowledge_index DAG"
        )
    params = client.get_collection(name).config
    vectors, sparse = params.params.vectors, params.params.sparse_vectors or {}
    metadata = getattr(params, "metadata", None) or {}
    fix = "rebuild it with `medtrinity knowledge index --recreate`, or choose another MEDTRINITY_KNOWLEDGE_COLLECTION"
    if not isinstance(vectors, dict) or DENSE not in vectors or SPARSE not in sparse:
        raise KnowledgeUnavailable(
            f"collection {name!r} at {where(knowledge)} lacks the {DENSE!r} and {SPARSE!r} vectors: {fix}"
        )
    if vectors[DENSE].size != encoder.size:
        raise KnowledgeUnavailable(
            f"collection {name!r} at {where(knowledge)} holds {vectors[DENSE].size}-dimensional vectors but the "
            f"embedding model {encoder.name} makes {encoder.size}: set MEDTRINITY_EMBEDDING_MODEL to the model it "
            f"was built with ({metadata.get('dense_model', 'not recorded')}), or {fix}"
        )
    if metadata.get("sparse") not in (None, BM25_VERSION):
        raise KnowledgeUnavailable(
            f"collection {name!r} was built with other term vectors ({metadata['sparse']}): {fix}"
        )


def _ensure_collection(client, knowledge: KnowledgeConfig, encoder: DenseEncoder, recreate: bool) -> None:
    from qdrant_client import models

    name = knowledge.collection
    if recreate and client.collection_exists(name):
        client.delete_collection(name)
    if not client.collection_exists(name):
        client.create_collection(
            name,
            vectors_config={DENSE: models.VectorParams(size=encoder.size, distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={"dense_model": encoder.name, "sparse": BM25_VERSION},
        )
    check_collection(client, knowledge, encoder)


def corpus_path(location: str | None, corpus: str, settings: Settings) -> Path:
    """Where a corpus lies locally: the demo corpus when no location is given; an s3:// location is
    mirrored into the cache first (only new or changed objects are fetched)."""
    if not location:
        return DEMO_CORPUS
    if "://" in location:
        from medtrinity_tasks.sources.mirror import mirror

        local = settings.cache_dir / "knowledge" / corpus
        mirror(location, local, settings)
        return local
    return Path(location)


def index_corpus(
    location: str | None,
    corpus: str,
    settings: Settings,
    *,
    fmt: str = "auto",
    batch_size: int = 128,
    recreate: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Index (or refresh) one corpus from a path or URI, and report what happened to every document."""
    started = time.monotonic()
    reader = CorpusReader(corpus_path(location, corpus, settings), corpus=corpus, fmt=fmt)
    knowledge = KnowledgeConfig.from_settings(settings)
    encoder = DenseEncoder(knowledge.embedding_model)
    counts = Counter()
    with knowledge_client(knowledge, write=True) as client:
        _ensure_collection(client, knowledge, encoder, recreate)
        name = knowledge.collection
        for batch in _batched(reader, batch_size):
            counts["chunks"] += len(batch)
            counts["indexed"] += _upsert_changed(client, name, encoder, batch)
            if progress:
                progress(f"{corpus}: {counts['chunks']} chunks read, {counts['indexed']} indexed")
        points = client.count(name, exact=True).count
    result = {
        "corpus": corpus,
        "collection": knowledge.collection,
        "where": where(knowledge),
        "documents": reader.documents,
        "chunks": counts["chunks"],
        "indexed": counts["indexed"],
        "unchanged": counts["chunks"] - counts["indexed"],
        "rejected": sum(reader.rejected.values()),
        "rejected_by_reason": dict(reader.rejected),
        "points_in_collection": points,
        "seconds": round(time.monotonic() - started, 2),
    }
    log.info("knowledge index: %s", result)
    return result


def summary_lines(result: dict) -> list[str]:
    """An index run's counts, for a terminal or a task log."""
    lines = [
        f"{result['corpus']}: {result['documents']} documents, {result['chunks']} chunks "
        f"({result['indexed']} indexed, {result['unchanged']} unchanged), {result['rejected']} rejected"
    ]
    for reason, count in sorted(result["rejected_by_reason"].items(), key=lambda item: -item[1]):
        lines.append(f"  rejected: {count} x {reason}")
    lines.append(f"collection {result['collection']} at {result['where']}: {result['points_in_collection']} passages")
    return lines


def _batched(chunks: Iterable[Chunk], size: int) -> Iterator[list[Chunk]]:
    batch = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _upsert_changed(client, collection: str, encoder: DenseEncoder, batch: list[Chunk]) -> int:
    """Embed and upsert the chunks of ``batch`` that are new or changed; returns how many."""
    from qdrant_client import models

    ids = [point_id(c.corpus, c.chunk_id) for c in batch]
    hashes = [hashlib.sha256(f"{c.title}\x1f{c.text}".encode()).hexdigest() for c in batch]
    known = {
        str(point.id): (point.payload or {}).get("content_hash")
        for point in client.retrieve(collection, ids=ids, with_payload=["content_hash"], with_vectors=False)
    }
    todo = [i for i in range(len(batch)) if known.get(ids[i]) != hashes[i]]
    if not todo:
        return 0
    texts = [passage_text(batch[i].title, batch[i].text) for i in todo]
    dense = encoder.encode(texts)
    points = []
    for row, i in enumerate(todo):
        indices, values = bm25_document(texts[row])
        chunk = batch[i]
        points.append(
            models.PointStruct(
                id=ids[i],
                vector={DENSE: dense[row].tolist(), SPARSE: models.SparseVector(indices=indices, values=values)},
                payload={
                    "corpus": chunk.corpus,
                    "chunk_id": chunk.chunk_id,
                    "title": chunk.title,
                    "text": chunk.text,
                    "content_hash": hashes[i],
                },
            )
        )
    client.upsert(collection, points=points, wait=True)
    return len(todo)


def passage_text(title: str, text: str) -> str:
    """What both encoders see of a passage: MedRAG's ``contents``, title and text."""
    return f"{title}. {text}" if title else text
