"""Medical text corpora read the way MedRAG (Xiong et al. 2024) prepared them, as chunks for the index.

Every format is streamed, so a PubMed baseline or a textbook folder never sits in memory whole, and a
bad document is counted by reason instead of raised: one broken line must not stop a 24-million-snippet load.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from medtrinity_tasks.errors import KnowledgeUnavailable, MedtrinityError
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.stages.base import Requirement, require

log = project_logger(__name__)  # de-identified log lines

TEXT_SPLITTERS = Requirement("langchain_text_splitters", "knowledge", KnowledgeUnavailable, "langchain-text-splitters")
CHUNK_CHARS = 1000  # MedRAG's chunk size
CHUNK_OVERLAP = 200  # and overlap
MAX_DOCUMENT_CHARS = 200_000  # a document longer than this is rejected as oversized

FORMATS = ("medrag", "pubmed", "text")  # "auto" picks by file name

EMPTY = "empty document"
DUPLICATE = "duplicate document"
OVERSIZED = "oversized document"
MALFORMED_JSON = "malformed JSON line"
XML_ERROR = "XML error"
NOT_UTF8 = "not UTF-8 text"

_FORMAT_BY_SUFFIX = {
    ".jsonl": "medrag",
    ".jsonl.gz": "medrag",
    ".xml": "pubmed",
    ".xml.gz": "pubmed",
    ".txt": "text",
    ".md": "text",
}

# The separators of LangChain's RecursiveCharacterTextSplitter (paragraphs, lines, spaces, characters),
# with sentence ends added between lines and spaces
_SEPARATORS = (r"\n[ \t]*\n\s*", r"\n", r"(?<=[.!?])\s+", r"\s+", "")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Chunk:
    corpus: str
    """The corpus name given by the caller, e.g. "statpearls"."""
    chunk_id: str
    """MedRAG's ``id``; for text chunked here ``f"{doc_id}_{i}"``, for PubMed ``f"pubmed_{pmid}_{i}"``."""
    title: str
    text: str
    """The chunk's content (MedRAG ``content``)."""


def chunk_text(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[str]:
    """Split with LangChain's RecursiveCharacterTextSplitter (which MedRAG used): on paragraph breaks
    first, then lines, then sentence ends, then spaces, then characters, each separator kept at the
    start of the next piece; pieces are merged up to `size` characters with about `overlap`
    characters carried over from the previous chunk. Whitespace-only input gives []. Text of at most
    `size` chars gives [text.strip()]."""
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be at least 0 and less than the size {size}, got {overlap}")
    text = text.strip()
    if len(text) <= size:
        return [text] if text else []
    return _splitter(size, overlap).split_text(text)


@lru_cache(maxsize=4)
def _splitter(size: int, overlap: int):
    """The splitter, imported on first use: only indexing chunks text (the knowledge extra)."""
    require("chunking a corpus", [TEXT_SPLITTERS])
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return RecursiveCharacterTextSplitter(
        separators=list(_SEPARATORS),
        keep_separator="start",
        is_separator_regex=True,
        chunk_size=size,
        chunk_overlap=overlap,
    )


@dataclass(frozen=True)
class _Document:
    doc_id: str
    title: str
    text: str
    is_chunk: bool
    """MedRAG lines are chunked already: yielded as they are, under their own id."""


@dataclass(frozen=True)
class _Unreadable:
    reason: str
    where: str
    """Where in the file, for the warning; never the document's text."""
    whole_file: bool = False
    """The rest of the file is lost, rather than one document."""


class CorpusReader:
    """Iterates the chunks of a corpus at `path` (a file or a directory, searched recursively in sorted
    order) and counts what it rejects. Usage:
        reader = CorpusReader(path, corpus="textbooks", fmt="auto")
        for chunk in reader: ...
        reader.rejected  -> collections.Counter: reason -> count
        reader.documents -> int, documents read (accepted or not)
    Each iteration is a fresh pass: the counts and the duplicate check start over.
    """

    def __init__(
        self, path: str | Path, corpus: str, fmt: str = "auto", max_document_chars: int = MAX_DOCUMENT_CHARS
    ) -> None:
        self.path = Path(path)
        self.corpus = corpus
        self.fmt = fmt
        self.max_document_chars = max_document_chars
        self.rejected: Counter[str] = Counter()
        self.documents = 0
        if fmt != "auto" and fmt not in FORMATS:
            raise MedtrinityError(f"unknown corpus format {fmt!r}: use one of {', '.join(FORMATS)} or auto")
        if not self.path.exists():
            raise MedtrinityError(f"corpus path {self.path} does not exist")
        if self.path.is_file() and fmt == "auto" and _format_of(self.path) is None:
            raise MedtrinityError(
                f"{self.path} is not a corpus file: known suffixes are {', '.join(_FORMAT_BY_SUFFIX)} "
                f"(or name the format: {', '.join(FORMATS)})"
            )

    def __iter__(self) -> Iterator[Chunk]:
        self.rejected = Counter()
        self.documents = 0
        seen_ids: set[str] = set()
        seen_texts: set[bytes] = set()
        root = self.path if self.path.is_dir() else self.path.parent
        for file, fmt in self._files():
            errors = []
            for item in _READERS[fmt](file, root):
                if isinstance(item, _Unreadable):
                    self.documents += not item.whole_file
                    self.rejected[item.reason] += 1
                    errors.append(item)
                    continue
                self.documents += 1
                if not item.text.strip():
                    self.rejected[EMPTY] += 1
                    continue
                if len(item.text) > self.max_document_chars:
                    self.rejected[OVERSIZED] += 1
                    continue
                fingerprint = _fingerprint(item.text)
                if fingerprint in seen_texts:
                    self.rejected[DUPLICATE] += 1
                    continue
                chunks = self._chunks(item)
                if any(chunk.chunk_id in seen_ids for chunk in chunks):
                    self.rejected[DUPLICATE] += 1
                    continue
                seen_texts.add(fingerprint)
                seen_ids.update(chunk.chunk_id for chunk in chunks)
                yield from chunks
            if errors:
                reasons = ", ".join(sorted({error.reason for error in errors}))
                log.warning(
                    "corpus %s: %s: %d unreadable (%s); the first: %s",
                    self.corpus,
                    file,
                    len(errors),
                    reasons,
                    errors[0].where,
                )

    def _files(self) -> Iterator[tuple[Path, str]]:
        if self.path.is_file():
            yield self.path, _format_of(self.path) if self.fmt == "auto" else self.fmt
            return
        for file in sorted(self.path.rglob("*")):
            fmt = _format_of(file)
            if fmt is not None and self.fmt in ("auto", fmt) and file.is_file():
                yield file, fmt

    def _chunks(self, document: _Document) -> list[Chunk]:
        if document.is_chunk:
            return [Chunk(self.corpus, document.doc_id, document.title, document.text)]
        return [
            Chunk(self.corpus, f"{document.doc_id}_{i}", document.title, piece)
            for i, piece in enumerate(chunk_text(document.text))
        ]


def _format_of(file: Path) -> str | None:
    name = file.name.lower()
    return next((fmt for suffix, fmt in _FORMAT_BY_SUFFIX.items() if name.endswith(suffix)), None)


def _fingerprint(text: str) -> bytes:
    """A digest of the text with whitespace collapsed and case folded: a corpus of PubMed's size must
    not keep every abstract in memory to find the repeated ones."""
    return hashlib.blake2b(" ".join(text.split()).lower().encode(), digest_size=16).digest()


def _open_binary(file: Path):
    return gzip.open(file, "rb") if file.name.lower().endswith(".gz") else file.open("rb")


def _read_medrag(file: Path, root: Path) -> Iterator[_Document | _Unreadable]:
    number = 0
    try:
        with _open_binary(file) as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield _medrag_document(line) or _Unreadable(MALFORMED_JSON, f"line {number}")
    except (OSError, EOFError) as error:  # a truncated or corrupt .gz
        yield _Unreadable(MALFORMED_JSON, f"line {number + 1}: {error}", whole_file=True)


def _medrag_document(line: bytes) -> _Document | None:
    """One MedRAG chunk line, or None when it is not a JSON object with an id and string fields."""
    try:
        record = json.loads(line.decode("utf-8"))
    except ValueError:  # a JSON or a UTF-8 error
        return None
    if not isinstance(record, dict):
        return None
    doc_id, title = record.get("id"), record.get("title", "")
    content = record.get("content")
    text = record.get("contents", "") if content is None else content  # contents: title + ". " + content
    if not (isinstance(doc_id, str) and doc_id and isinstance(title, str) and isinstance(text, str)):
        return None
    return _Document(doc_id, title, text, is_chunk=True)


def _read_pubmed(file: Path, root: Path) -> Iterator[_Document | _Unreadable]:
    try:
        with _open_binary(file) as stream:
            article_set = None
            for event, element in ET.iterparse(stream, events=("start", "end")):
                if article_set is None:
                    article_set = element
                elif event == "end" and element.tag == "PubmedArticle":
                    document = _pubmed_document(element)
                    article_set.clear()  # drop parsed articles: memory stays flat over a 30,000-article file
                    yield document
    except ET.ParseError as error:
        yield _Unreadable(XML_ERROR, f"line {error.position[0]}, column {error.position[1]}", whole_file=True)
    except (OSError, EOFError) as error:  # a truncated or corrupt .gz
        yield _Unreadable(XML_ERROR, str(error), whole_file=True)


def _pubmed_document(article: ET.Element) -> _Document | _Unreadable:
    """Title and abstract of one PubmedArticle; labelled abstract parts become "LABEL: text" paragraphs."""
    pmid = (article.findtext("MedlineCitation/PMID") or "").strip()
    if not pmid:
        return _Unreadable(XML_ERROR, "an article without a PMID")
    title = article.find("MedlineCitation/Article/ArticleTitle")
    paragraphs = []
    for part in article.iterfind("MedlineCitation/Article/Abstract/AbstractText"):
        text = "".join(part.itertext()).strip()
        label = part.get("Label")
        if text:
            paragraphs.append(f"{label}: {text}" if label else text)
    title_text = "".join(title.itertext()).strip() if title is not None else ""
    return _Document(f"pubmed_{pmid}", title_text, "\n\n".join(paragraphs), is_chunk=False)


def _read_text(file: Path, root: Path) -> Iterator[_Document | _Unreadable]:
    data = file.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        yield _Unreadable(NOT_UTF8, f"line {line}")
        return
    heading = _HEADING.search(text)
    title = heading.group(1) if heading else file.stem.replace("_", " ").replace("-", " ")
    doc_id = file.relative_to(root).with_suffix("").as_posix().replace("/", "_")
    yield _Document(doc_id, title, text, is_chunk=False)


_READERS = {"medrag": _read_medrag, "pubmed": _read_pubmed, "text": _read_text}
