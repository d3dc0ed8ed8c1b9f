import gzip
import json
import logging
import re
from collections import Counter

import pytest

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.knowledge.corpus import CHUNK_CHARS, Chunk, CorpusReader, chunk_text

PUBMED_HEADER = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2024//EN" '
    '"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_240101.dtd">\n'
)


def _pubmed_article(pmid: str, title: str, abstract: str = "") -> str:
    return (
        f'<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">{pmid}</PMID>'
        f'<Article PubModel="Print"><ArticleTitle>{title}</ArticleTitle>{abstract}</Article></MedlineCitation>'
        "<PubmedData><PublicationStatus>ppublish</PublicationStatus></PubmedData></PubmedArticle>\n"
    )


def _pubmed_file(*articles: str) -> str:
    return PUBMED_HEADER + "<PubmedArticleSet>\n" + "".join(articles) + "</PubmedArticleSet>\n"


def _medrag_line(chunk_id: str, content: str, title: str = "Anatomy_Gray") -> str:
    return json.dumps({"id": chunk_id, "title": title, "content": content, "contents": f"{title}. {content}"})


def _write_lines(path, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=\.)\s+", text.strip())


# chunk_text


def test_short_text_is_one_stripped_chunk_and_blank_text_none():
    assert chunk_text("  The liver is the largest gland.\n") == ["The liver is the largest gland."]
    assert chunk_text("a" * CHUNK_CHARS + "\n\n") == ["a" * CHUNK_CHARS]
    assert chunk_text(" \n\t\n ") == []


def test_paragraphs_are_chunked_on_paragraph_breaks_with_overlap():
    text = "\n\n".join(
        f"Paragraph {p} opens with a sentence about the renal cortex. Its second sentence, number {p}, is on nephrons."
        for p in range(40)
    )
    chunks = chunk_text(text)
    assert len(chunks) > 3
    assert all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
    assert all(chunk.startswith("Paragraph") and chunk.endswith("is on nephrons.") for chunk in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.split("\n\n")[0] == before.split("\n\n")[-1]  # the last paragraph is carried over
    assert all(any(sentence in chunk for chunk in chunks) for sentence in _sentences(text))


def test_a_long_paragraph_is_chunked_at_sentence_ends_with_overlap():
    text = " ".join(f"Sentence {n} notes an opacity in the left lower lobe of the lung." for n in range(60))
    chunks = chunk_text(text)
    assert len(chunks) > 3
    assert all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
    assert all(chunk.startswith("Sentence ") and chunk.endswith("of the lung.") for chunk in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        previous, following = _sentences(before), _sentences(after)
        carried = previous[previous.index(following[0]) :]  # the sentences that end the previous chunk
        assert following[: len(carried)] == carried and 0 < sum(map(len, carried)) <= 200
    assert all(any(sentence in chunk for chunk in chunks) for sentence in _sentences(text))


def test_text_without_separators_is_cut_by_characters():
    text = "".join(chr(ord("a") + (i * 7) % 26) for i in range(2500))
    assert chunk_text(text) == [text[:1000], text[800:1800], text[1600:]]


# formats


def test_medrag_jsonl_and_gzipped_jsonl(tmp_path):
    (tmp_path / "textbooks").mkdir()
    first = _medrag_line("Anatomy_Gray_0", "The heart has four chambers.")
    lines = [first, "", _medrag_line("Anatomy_Gray_1", "Valves.")]
    _write_lines(tmp_path / "textbooks" / "Anatomy_Gray.jsonl", lines)
    contents_only = json.dumps({"id": "Pathology_Robbins_0", "title": "Pathology_Robbins", "contents": "Necrosis."})
    _write_lines(tmp_path / "textbooks" / "Pathology_Robbins.jsonl.gz", [contents_only])
    (tmp_path / "textbooks" / "README").write_text("not a corpus file")

    reader = CorpusReader(tmp_path, corpus="textbooks")
    assert list(reader) == [
        Chunk("textbooks", "Anatomy_Gray_0", "Anatomy_Gray", "The heart has four chambers."),
        Chunk("textbooks", "Anatomy_Gray_1", "Anatomy_Gray", "Valves."),
        Chunk("textbooks", "Pathology_Robbins_0", "Pathology_Robbins", "Necrosis."),
    ]
    assert reader.documents == 3
    assert reader.rejected == Counter()


@pytest.mark.parametrize("name", ["pubmed24n0001.xml", "pubmed24n0001.xml.gz"])
def test_pubmed_xml_titles_and_labelled_abstracts(tmp_path, name):
    labelled = (
        "<Abstract>"
        '<AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND"><i>E. coli</i> causes most infections.'
        "</AbstractText>"
        '<AbstractText Label="RESULTS" NlmCategory="RESULTS">Resistance rose in 10<sup>3</sup> isolates.'
        "</AbstractText>"
        "</Abstract>"
    )
    xml = _pubmed_file(
        _pubmed_article("111", "Urinary infection with <i>Escherichia coli</i>.", labelled),
        _pubmed_article("222", "A letter without an abstract."),
    ).encode()
    (tmp_path / name).write_bytes(gzip.compress(xml) if name.endswith(".gz") else xml)

    reader = CorpusReader(tmp_path / name, corpus="pubmed")
    assert list(reader) == [
        Chunk(
            "pubmed",
            "pubmed_111_0",
            "Urinary infection with Escherichia coli.",
            "BACKGROUND: E. coli causes most infections.\n\nRESULTS: Resistance rose in 103 isolates.",
        )
    ]
    assert reader.documents == 2
    assert reader.rejected == Counter({"empty document": 1})


def test_text_folder_titles_from_heading_or_file_name(tmp_path):
    (tmp_path / "organs").mkdir()
    liver = "Some preface.\n\n## Liver anatomy\n\nThe liver has eight segments."
    (tmp_path / "organs" / "liver.md").write_text(liver)
    (tmp_path / "acute_kidney-injury.txt").write_text("A rise in creatinine within 48 hours.\n")
    long_text = "\n\n".join(f"Stage {n} of chronic kidney disease is defined by the filtration." for n in range(30))
    (tmp_path / "ckd.md").write_text("# Chronic kidney disease\n\n" + long_text)

    chunks = list(CorpusReader(tmp_path, corpus="notes", fmt="text"))
    assert [(chunk.chunk_id, chunk.title) for chunk in chunks] == [
        ("acute_kidney-injury_0", "acute kidney injury"),
        ("ckd_0", "Chronic kidney disease"),
        ("ckd_1", "Chronic kidney disease"),
        ("ckd_2", "Chronic kidney disease"),
        ("organs_liver_0", "Liver anatomy"),
    ]
    assert chunks[0].text == "A rise in creatinine within 48 hours."
    assert chunks[1].text.startswith("# Chronic kidney disease\n\nStage 0 ")
    assert chunks[-1].text == liver


def test_a_named_format_reads_a_file_with_any_suffix(tmp_path):
    (tmp_path / "statpearls.data").write_text(_medrag_line("article-1_0", "Sepsis.", "Sepsis") + "\n")
    assert [chunk.chunk_id for chunk in CorpusReader(tmp_path / "statpearls.data", "statpearls", "medrag")] == [
        "article-1_0"
    ]


def test_each_iteration_is_a_fresh_pass(tmp_path):
    _write_lines(tmp_path / "a.jsonl", [_medrag_line("a_0", "One."), "{", _medrag_line("a_0", "Two.")])
    reader = CorpusReader(tmp_path, corpus="c")
    first = list(reader)
    assert list(reader) == first
    assert reader.documents == 3
    assert reader.rejected == Counter({"malformed JSON line": 1, "duplicate document": 1})


# rejected input


def test_malformed_json_lines_are_counted_and_warned_once_per_file(tmp_path, caplog):
    lines = [
        _medrag_line("ok_0", "The spleen filters blood."),
        '{"id": "broken_0", "content": "unterminated',
        '["a", "list"]',
        json.dumps({"title": "no id", "content": "Orphan text."}),
        json.dumps({"id": 7, "content": "A numeric id."}),
        "",
        _medrag_line("ok_1", "The pancreas has an exocrine part."),
    ]
    _write_lines(tmp_path / "broken.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="medtrinity_tasks.knowledge.corpus"):
        reader = CorpusReader(tmp_path, corpus="textbooks")
        assert [chunk.chunk_id for chunk in reader] == ["ok_0", "ok_1"]
    assert reader.rejected == Counter({"malformed JSON line": 4})
    assert reader.documents == 6
    [warning] = caplog.records
    assert warning.levelno == logging.WARNING
    assert "broken.jsonl" in warning.getMessage() and "line 2" in warning.getMessage()
    assert "Orphan" not in warning.getMessage()


def test_truncated_xml_keeps_the_articles_before_the_break(tmp_path):
    abstract = "<Abstract><AbstractText>Finding number {}.</AbstractText></Abstract>"
    articles = [_pubmed_article(str(n), f"Title {n}", abstract.format(n)) for n in (1, 2, 3)]
    whole = _pubmed_file(*articles)
    (tmp_path / "a.xml").write_text(whole[: whole.index("Finding number 3") + 5])
    (tmp_path / "b.xml").write_text(_pubmed_file(_pubmed_article("4", "Title 4", abstract.format(4))))

    reader = CorpusReader(tmp_path, corpus="pubmed")
    assert [chunk.chunk_id for chunk in reader] == ["pubmed_1_0", "pubmed_2_0", "pubmed_4_0"]
    assert reader.rejected == Counter({"XML error": 1})
    assert reader.documents == 3


def test_empty_and_duplicate_documents_by_id_and_by_text(tmp_path):
    _write_lines(
        tmp_path / "chunks.jsonl",
        [
            _medrag_line("x_0", "Gallstones are mostly cholesterol."),
            _medrag_line("x_0", "A different text under a repeated id."),
            _medrag_line("y_0", "  gallstones are MOSTLY\ncholesterol. "),
            _medrag_line("z_0", " \n "),
            _medrag_line("w_0", "Bile is stored in the gallbladder."),
        ],
    )
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("Bile is stored in the  gallbladder.")  # the text of w_0
    (tmp_path / "notes" / "b.txt").write_text("\n\n")
    (tmp_path / "notes" / "c.txt").write_text("Cholecystitis is inflammation of the gallbladder.")
    (tmp_path / "notes" / "c.md").write_text("A different note whose id is notes_c as well.")

    reader = CorpusReader(tmp_path, corpus="mixed")
    assert [chunk.chunk_id for chunk in reader] == ["x_0", "w_0", "notes_c_0"]
    assert reader.rejected == Counter({"duplicate document": 4, "empty document": 2})
    assert reader.documents == 9


def test_oversized_documents_are_rejected(tmp_path):
    (tmp_path / "fits.txt").write_text("a" * 100)
    (tmp_path / "too_long.txt").write_text("b" * 101)
    _write_lines(tmp_path / "chunks.jsonl", [_medrag_line("long_0", "c" * 101), _medrag_line("short_0", "d" * 99)])

    reader = CorpusReader(tmp_path, corpus="c", max_document_chars=100)
    assert [chunk.chunk_id for chunk in reader] == ["short_0", "fits_0"]
    assert reader.rejected == Counter({"oversized document": 2})


def test_non_utf8_text_is_rejected(tmp_path, caplog):
    (tmp_path / "latin1.txt").write_bytes("Line one.\nCafé au lait spots.".encode("latin-1"))
    (tmp_path / "utf8.txt").write_text("Café au lait spots suggest neurofibromatosis.", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="medtrinity_tasks.knowledge.corpus"):
        reader = CorpusReader(tmp_path, corpus="c")
        assert [chunk.chunk_id for chunk in reader] == ["utf8_0"]
    assert reader.rejected == Counter({"not UTF-8 text": 1})
    assert reader.documents == 2
    [warning] = caplog.records
    assert "latin1.txt" in warning.getMessage() and "line 2" in warning.getMessage()


# paths


def test_a_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(MedtrinityError, match=re.escape(str(missing))):
        CorpusReader(missing, corpus="c")


def test_a_single_file_of_unknown_suffix_is_named_with_the_known_ones(tmp_path):
    odd = tmp_path / "corpus.csv"
    odd.write_text("id,content\n")
    with pytest.raises(MedtrinityError, match=re.escape(str(odd))) as raised:
        CorpusReader(odd, corpus="c")
    assert ".jsonl" in str(raised.value) and ".xml.gz" in str(raised.value)
