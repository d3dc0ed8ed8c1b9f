"""Why an input is rejected or a record quarantined: a kind that manifests count by, and the text a person reads.

A kind is a phrase written in the code ("file is missing", "slice_volumes failed"): it never holds a file's
name, a pseudonym or text read from a source, so counting needs no parsing and the kind no de-identification.
The text says the particulars (which file, which values, what a library said) and is de-identified where it
enters a row or a record (``phi.clean_reason``). Rows carry both, ``reject_reason`` with ``reject_kind`` and
``quarantine_reasons`` with the parallel ``quarantine_kinds``, set only through ``rejected`` and ``quarantined``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reason:
    kind: str
    """What is counted: a phrase from the code."""
    text: str
    """What is read: the kind's words with the particulars."""

    @classmethod
    def of(cls, kind: str, detail: str | None = None) -> Reason:
        """The common wording: the kind, then its particulars after ': '."""
        return cls(kind, kind if detail is None else f"{kind}: {detail}")

    def reworded(self, text: str) -> Reason:
        """The same kind with its text de-identified or with files named by their pseudonyms."""
        return Reason(self.kind, text)


def rejected(row: dict, reason: Reason) -> dict:
    """``row`` as the reject of its input, for ``reason``."""
    return dict(row, reject_reason=reason.text, reject_kind=reason.kind)


def quarantined(row: dict, reasons: Iterable[Reason]) -> dict:
    """``row`` as a record that goes to quarantine, for ``reasons``."""
    reasons = list(reasons)
    return dict(row, quarantine_reasons=[r.text for r in reasons], quarantine_kinds=[r.kind for r in reasons])


def reject_of(row: dict) -> Reason | None:
    """Why ``row``'s input was rejected; None for an input that was not."""
    return Reason(row["reject_kind"], row["reject_reason"]) if row.get("reject_reason") else None


def quarantine_of(row: dict) -> list[Reason]:
    """Why ``row``'s record goes to quarantine; empty for a record that does not."""
    texts, kinds = row.get("quarantine_reasons") or [], row.get("quarantine_kinds") or []
    return [Reason(kind, text) for kind, text in zip(kinds, texts, strict=True)]
