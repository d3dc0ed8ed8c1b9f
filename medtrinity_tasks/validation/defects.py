"""Defects of composed text, whichever engine wrote it: the marks a template leaves when a slot it fills
is empty or its grammar does not fit the words (an empty list before a full stop, a doubled word, an
article with nothing after it, "a" before a vowel sound, "is with" where a shape was left out), and of
images too small or too narrow to describe.

Each pattern is one a careful writer never produces, so a hit is a defect and good prose, a template's
or a language model's, passes: "had had" and "that that" are English; a capital A inside a sentence is
a name (vitamin A, hepatitis A), not an article; a word whose article English leaves open (an
historic, a FLAIR) is not judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medtrinity_tasks.generation.grammar import article
from medtrinity_tasks.phi import quote

FUNCTION_WORDS = "and|or|of|in|with|is|are|was|were|to|on|at|by|for|from|a|an|the"
"""Words that cannot follow an article: "the and", "a of" are a slot left empty between them."""
ALLOWED_DOUBLES = {"had", "that"}
"""Words English repeats: "it had had", "that that"."""
_ARTICLE = r"(?:\b(?:a|an|the)\b|(?:^|(?<=[.!?]\s))(?:A|An|The)\b)"
"""An article: lower-case anywhere, capitalised only where a sentence starts (vitamin A is a name)."""
EMPTY_SLOTS = (
    r"\w[ \t]+[.,;:!?](?!\d)",  # a list or word left out before punctuation: "the annotated ."
    r"[^\s.!?:;][ \t]{2,}\S",  # ... or between two words: "the  and"
    r"\(\s*\)|\[\s*\]",  # empty brackets
    r"[{}]",  # a placeholder never filled
    r"(?<=[a-z,] )(?:None|NaN|nan)\b",  # a missing value printed
)
PATTERNS = {
    "empty slot": re.compile("|".join(EMPTY_SLOTS)),
    "doubled word": re.compile(r"\b([A-Za-z]+)\s+\1\b", re.IGNORECASE),
    "dangling article": re.compile(
        rf"{_ARTICLE}\s*(?:[.,;:!?)](?![A-Za-z])|$)|{_ARTICLE}\s+(?:{FUNCTION_WORDS})\b(?!-)"
    ),
    "'is with'": re.compile(r"\b(?:is|are|was|were)\s+with\b", re.IGNORECASE),
}
"""Each defect by name, and how it shows in text."""
_INDEFINITE = re.compile(r"(?:\b(a|an)|(?:^|(?<=[.!?]\s))(A|An))\s+([A-Za-z0-9][\w&'-]*)")
SNIPPET_CHARS = 16
"""Characters quoted either side of a defect, to find it in the text."""


def text_defects(text: str) -> list[tuple[str, str]]:
    """(defect, the text around it) for each defect in ``text``; a word the defect names is quoted
    (de-identified) as reasons quote text."""
    found = []
    for defect, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if defect == "doubled word" and match.group(1).lower() in ALLOWED_DOUBLES:
                continue
            found.append((defect, _around(text, match)))
    for match in _INDEFINITE.finditer(text):
        written, expected = (match.group(1) or match.group(2)).lower(), article(match.group(3))
        if expected and written != expected:
            found.append((f"'{written}' before {quote(match.group(3))}", _around(text, match)))
    return found


def _around(text: str, match: re.Match) -> str:
    return text[max(match.start() - SNIPPET_CHARS, 0) : match.end() + SNIPPET_CHARS]


def section_defects(sections: dict[str, str]) -> str | None:
    """What is wrong with a description's sections, one defect per section and where it is, or None:
    e.g. "region_relationship: empty slot at 'consistent with the annotated .'"."""
    described = [
        f"{name}: {defects[0][0]} at {quote(defects[0][1])}"
        for name, text in sections.items()
        if (defects := text_defects(text))
    ]
    return "; ".join(described) or None


@dataclass(frozen=True)
class ImageBounds:
    """The smallest side and the largest aspect ratio of an image worth describing (the settings
    ``min_image_side`` and ``max_aspect_ratio``): a 1 x 16 strip of a single slice is no image."""

    min_side: int
    max_aspect_ratio: float

    @classmethod
    def from_settings(cls, settings) -> ImageBounds:
        return cls(settings.min_image_side, settings.max_aspect_ratio)

    @classmethod
    def declared(cls) -> ImageBounds:
        """The bounds as the settings declare them by default."""
        from medtrinity_tasks.config import Settings

        fields = Settings.model_fields
        return cls(fields["min_image_side"].default, fields["max_aspect_ratio"].default)

    def degeneracy(self, width: int | None, height: int | None) -> str | None:
        """Why an image of ``width`` x ``height`` pixels is degenerate, or None when it is not."""
        if not width or not height:
            return None  # a missing size is the record contract's to report
        size = f"{width} x {height} pixels"
        if min(width, height) < self.min_side:
            return f"{size}: a side is shorter than {self.min_side} (MEDTRINITY_MIN_IMAGE_SIDE)"
        ratio = max(width, height) / min(width, height)
        if ratio > self.max_aspect_ratio:
            return f"{size}: aspect ratio {ratio:.3g} is above {self.max_aspect_ratio:g} (MEDTRINITY_MAX_ASPECT_RATIO)"
        return None
