"""Errors a person can act on: each message names what is wrong and what to do."""

from __future__ import annotations

from medtrinity_tasks.reasons import Reason


class MedtrinityError(Exception):
    """A failure the command line prints as one line, without a traceback."""


class SourceNotFound(MedtrinityError):
    pass


class StoreUnavailable(MedtrinityError):
    pass


class ExpertUnavailable(MedtrinityError):
    """An expert's model is missing or broken: says which directory and what belongs there."""


class InputRejected(Exception):
    """Raised by a reader for one input file; the pipeline records it as a reject with its ``reason``:
    ``kind: detail`` (or the kind alone), or ``text`` where the particulars sit inside the kind's words."""

    def __init__(self, kind: str, detail: str | None = None, *, text: str | None = None):
        self.reason = Reason(kind, text) if text is not None else Reason.of(kind, detail)
        super().__init__(self.reason.text)


class KnowledgeUnavailable(MedtrinityError):
    """The knowledge base cannot be used: names the server, store or model, and what to do."""


class EngineUnavailable(MedtrinityError):
    """A description engine cannot be reached: names the URL and how to start a server."""
