"""Articles follow the next word's sound, and the rule leaves open what English leaves open."""

import pytest

from medtrinity_tasks.generation.grammar import article, capitalised, with_article


@pytest.mark.parametrize(
    "word, expected",
    [
        ("ill-defined", "an"), ("oval", "an"), ("elongated", "an"), ("irregular", "an"), ("anterior", "an"),
        ("well-defined", "a"), ("round", "a"), ("liver", "a"), ("hippocampus", "a"),
        ("uterine", "a"), ("ureteric", "a"), ("usual", "a"), ("unilateral", "a"), ("uniform", "a"),
        ("European", "a"), ("one-sided", "a"), ("once", "a"),
        ("unclear", "an"), ("ulcer", "an"), ("urgent", "an"), ("utmost", "an"), ("onerous", "an"),
        ("hour", "an"), ("honest", "an"), ("hypodense", "a"),
        ("MR", "an"), ("MRI", "an"), ("X-ray", "an"), ("x-ray", "an"), ("FDG-avid", "an"), ("L1", "an"),
        ("MLO", "an"), ("AP", "an"), ("SUV", "an"), ("MRCP", "an"),
        ("CT", "a"), ("US", "a"), ("PA", "a"), ("CC", "a"), ("T2-weighted", "a"), ("NIfTI", "a"), ("xanthoma", "a"),
        ("8", "an"), ("80", "an"), ("11", "an"), ("18", "an"), ("18000", "an"), ("8.5", "an"),
        ("1", "a"), ("1.5", "a"), ("110", "a"), ("100", "a"),
    ],
)  # fmt: skip
def test_the_article_follows_the_sound(word, expected):
    assert article(word) == expected


@pytest.mark.parametrize("word", ["FLAIR", "SPECT", "historic", "herb", "HCC", "H&E", "unidentified", "1100", ""])
def test_words_whose_article_english_leaves_open_are_not_judged(word):
    assert article(word) is None


def test_a_phrase_takes_the_article_of_its_first_word():
    assert with_article("ill-defined margin") == "an ill-defined margin"
    assert with_article("well-defined margin") == "a well-defined margin"
    assert with_article("MR-visible lesion") == "an MR-visible lesion"
    assert with_article("uterine mass") == "a uterine mass"
    assert with_article("FLAIR hyperintensity") == "a FLAIR hyperintensity"  # open: either is written
    assert capitalised("an MR slice") == "An MR slice" and capitalised("") == ""
