"""English articles by sound, for the engines' sentences and for the gate that checks any engine's text.

"a" or "an" follows how the next word is spoken, not how it is spelled: an ill-defined margin, an MR
slice, an 8 mm nodule, a uterine mass, a US image, a one-sided effusion. ``article`` says which one a
word takes, or None where English allows either or the spelling does not tell (FLAIR, a or an
historic, unidentified against unidirectional), so the gate never flags what a careful writer might write.
"""

from __future__ import annotations

import re

LETTERS_SPOKEN_WITH_A_VOWEL = set("AEFILMNORSX")
"""Letters whose names begin with a vowel sound (an MR, an X-ray, an FDG scan, an SUV)."""
LETTERS_SPOKEN_EITHER_WAY = set("H")
"""H is "aitch" to some and "haitch" to others: an HCC and a HCC are both written."""
SPELLED_ACRONYM_LETTERS = 3
"""Capitals up to this length are read out letter by letter (MRI, CT, DWI, MLO); longer ones with a vowel
may be read as a word (FLAIR, SPECT, PACS), so their article is left open."""
SILENT_H = ("hour", "honest", "honor", "honour", "heir")
OPEN_H = ("herb", "histor", "hotel", "homage")
"""Words after which careful writers use either article (an historic, a historic)."""
SPOKEN_YOU = re.compile(r"u[rstv][aeiouy]|uni(?![dmn])|unanim|ubiq|eu|ewe")
"""Vowel-letter starts spoken with a consonant "you" (uterine, usual, unilateral, unanimous, European)."""
OPEN_UNI = re.compile(r"uni[dmn]")
"""uni- before d, m, n is either "you-ni" (unimodal, unidirectional) or "un-i" (unidentified, unimpressive)."""
_ONE = re.compile(r"once\b|one(?:s?\b|-)")
_WORD = re.compile(r"[A-Za-z0-9][\w&'-]*")


def article(word: str) -> str | None:
    """'a' or 'an' for the word an article stands before; None where either may be right."""
    token = re.split(r"[-/]", word.lstrip("\"'("))[0]  # the part that is spoken first: FDG in FDG-avid
    if not token:
        return None
    if token[0].isdigit():
        return _number_article(re.match(r"\d+", token).group())
    letters = re.sub(r"[^A-Za-z]", "", token)
    if not letters:
        return None
    if _read_as_letters(token, letters):
        if letters[0] in LETTERS_SPOKEN_EITHER_WAY:
            return None
        return "an" if letters[0] in LETTERS_SPOKEN_WITH_A_VOWEL else "a"
    if letters.isupper() and len(letters) > 1:
        return None  # a longer acronym: read as letters or as a word, which its spelling does not say
    return _word_article(token.lower())


def _read_as_letters(token: str, letters: str) -> bool:
    """A token read out letter by letter: a single capital (an L1 vertebra, a T2 image), short capitals
    (MR, CT, H&E), or capitals without a vowel to say them by."""
    if not letters.isupper():
        return len(token) > 1 and token[0].isupper() and token[1].isdigit()
    return len(letters) <= SPELLED_ACRONYM_LETTERS or not re.search(r"[AEIOUY]", letters)


def _word_article(lower: str) -> str | None:
    if lower.startswith(OPEN_H) or OPEN_UNI.match(lower):
        return None
    if lower.startswith(SILENT_H):
        return "an"
    if lower[0] == "x":  # a lone x (x-ray) is said "ex"; xanthoma starts with a z sound
        return "an" if lower in ("x", "xray") else "a"
    if lower[0] in "aeiou":
        return "a" if SPOKEN_YOU.match(lower) or _ONE.match(lower) else "an"
    return "a"


def _number_article(digits: str) -> str | None:
    """an 8, an 11, an 18, an 80, an 18000; a 1, a 100; eleven hundred or one thousand one hundred: open."""
    if digits.startswith("8"):
        return "an"
    if digits[:2] in ("11", "18"):
        return {2: "an", 5: "an", 4: None}.get(len(digits), "a")
    return "a"


def with_article(phrase: str) -> str:
    """``phrase`` after its indefinite article: 'an ill-defined margin', 'a uterine mass'."""
    match = _WORD.search(phrase)
    return f"{(article(match.group()) if match else None) or 'a'} {phrase}"


def capitalised(text: str) -> str:
    """``text`` with its first letter upper-case and the rest as written (names and codes keep their case)."""
    return text[:1].upper() + text[1:]
