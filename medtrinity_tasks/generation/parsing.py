"""An LLM's answer to the five-section description: JSON parsed, repaired when that is safe, and
with personal data replaced by typed placeholders (``phi.deidentify``).

Safe repairs are the ones that cannot change what the model said: a Markdown code fence around the
JSON, prose before or after the object, trailing commas, a section given as a list of sentences.
Anything else (no object, a missing or empty section, a section that is not text or is longer
than the schema's ``SECTION_MAX_CHARS``) is not guessed at: ``OutputInvalid`` carries the reason,
for the record to be quarantined with the raw text.
"""

from __future__ import annotations

import json
import re

from medtrinity_tasks.generation.prompt import SECTION_MAX_CHARS
from medtrinity_tasks.generation.template import description_text
from medtrinity_tasks.phi import deidentify, find_phi
from medtrinity_tasks.reasons import Reason, quarantined
from medtrinity_tasks.records import DESCRIPTION_SECTIONS


class OutputInvalid(ValueError):
    """The answer cannot be read as the five sections; the message says why."""


def parse_sections(answer: str) -> tuple[dict[str, str], list[str]]:
    """The five sections of ``answer`` and the notes of what was repaired or removed."""
    notes = []
    text = answer.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.S)
    if fenced:
        text = fenced.group(1)
        notes.append("code fence removed")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise OutputInvalid("no JSON object in the answer")
    if (start, end) != (0, len(text) - 1):
        notes.append("text around the JSON object removed")
    body = text[start : end + 1]
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        repaired = re.sub(r",\s*([}\]])", r"\1", body)
        try:
            data = json.loads(repaired)
        except json.JSONDecodeError as exc:
            raise OutputInvalid(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})") from None
        notes.append("trailing commas removed")
    if not isinstance(data, dict):
        raise OutputInvalid("the answer's JSON is not an object")
    sections = {}
    for name in DESCRIPTION_SECTIONS:
        value = data.get(name)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = " ".join(v.strip() for v in value)
            notes.append(f"{name}: sentences joined")
        if not isinstance(value, str) or not value.strip():
            raise OutputInvalid(f"section {name!r} is missing or empty")
        if len(value) > SECTION_MAX_CHARS:
            raise OutputInvalid(f"section {name!r} is longer than {SECTION_MAX_CHARS} characters")
        value = " ".join(value.split())
        notes += [f"{name}: {kind} removed" for kind in find_phi(value)]
        sections[name] = deidentify(value)
    return sections, notes


def with_answer(row: dict, answer: str, generator: dict) -> dict:
    """``row`` described by an LLM's ``answer``, or quarantined as ``output_invalid`` with the raw
    answer kept in its ``description_text`` for inspection."""
    try:
        sections, _ = parse_sections(answer)
    except OutputInvalid as exc:
        return quarantined(
            dict(row, generator=generator, description_text=answer), [Reason.of("output_invalid", str(exc))]
        )
    return dict(row, description=sections, description_text=description_text(sections), generator=generator)
