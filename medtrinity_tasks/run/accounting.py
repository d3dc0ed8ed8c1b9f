"""What the steps hand each other and write to the store: counts that must balance, a shard's work
record, the summary a shard task returns, and reasons counted by kind.

Each ``to_json`` gives the plain dict the store and XCom hold (their shapes are read by the tests,
the browser and earlier runs' records), and ``from_json`` reads one back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, fields

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.errors import MedtrinityError

TOP_REASONS = 5
"""Reasons an error message names, most frequent first."""
LISTING = "listing"
"""The work record of the inputs a listing rejects before any shard (see ``plan.plan_shards``)."""


def top_reasons(reasons: Counter) -> str:
    """The most frequent reason kinds with their counts, for an error message."""
    return "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(TOP_REASONS)) or "none"


@dataclass(frozen=True)
class Counts:
    """Inputs (used or rejected) and the records made of them (passed or quarantined)."""

    inputs: int = 0
    used: int = 0
    rejected: int = 0
    produced: int = 0
    records: int = 0
    quarantined: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Counts:
        """From a work record's ``counts``, or a shard summary that holds them among its other keys."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    @classmethod
    def total(cls, counts: Iterable[Counts]) -> Counts:
        counts = list(counts)
        return cls(**{f.name: sum(getattr(c, f.name) for c in counts) for f in fields(cls)})

    def check_balance(self, source_id: str, part: str, unaccounted: Collection[str] = ()) -> Counts:
        """These counts, if every input was used or rejected and every record produced passed or was
        quarantined; else the pipeline lost something, and nothing of ``part`` may be written.
        ``unaccounted`` names the inputs that yielded neither records nor a reject, where known."""
        if self.inputs != self.used + self.rejected or self.produced != self.records + self.quarantined or unaccounted:
            lost = f"; inputs {sorted(unaccounted)} yielded neither records nor a reject" if unaccounted else ""
            raise MedtrinityError(f"{source_id} {part}: accounting does not balance: {self.to_json()}{lost}")
        return self


@dataclass(frozen=True)
class WorkRecord:
    """A shard's accounting in the store (``work/<shard>.json``), written last: its presence marks the
    shard finished. ``rejected`` holds ``{"input", "reason", "kind"}``, ``quarantined`` ``{"id", "input",
    "slice_index", "reasons", "kinds"}`` (each reason's kind, see ``reasons.Reason``). The listing's record has
    no engine, reference scores, Data Docs or time."""

    source_id: str
    shard_id: str
    run_id: str
    inputs: list[str]
    used: list[str]
    rejected: list[dict]
    quarantined: list[dict]
    counts: Counts
    pipeline_version: str = PIPELINE_VERSION
    engine: str | None = None
    reference: dict | None = None
    data_docs: bool | None = None
    seconds: float | None = None

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: dict) -> WorkRecord:
        optional = {f.name for f in fields(cls) if f.default is None}
        return cls(
            **{f.name: data[f.name] for f in fields(cls) if f.name not in optional | {"counts"}},
            counts=Counts.from_json(data["counts"]),
            **{name: data.get(name) for name in optional},
        )

    def reject_kinds(self) -> Counter:
        return Counter(r["kind"] for r in self.rejected)

    def quarantine_kinds(self) -> Counter:
        return Counter(kind for q in self.quarantined for kind in q["kinds"])


def by_reason(works: Iterable[WorkRecord]) -> dict:
    """Rejected inputs and quarantined records counted by reason kind, most frequent first."""
    works = list(works)
    rejected = sum((w.reject_kinds() for w in works), Counter())
    quarantined = sum((w.quarantine_kinds() for w in works), Counter())
    return {
        "rejected_by_reason": dict(rejected.most_common()),
        "quarantined_by_reason": dict(quarantined.most_common()),
    }


@dataclass(frozen=True)
class ShardSummary:
    """What a shard task returns (through XCom) for the gate and publish: its counts and reasons."""

    shard_id: str
    run_id: str
    skipped: bool
    counts: Counts
    reject_reasons: dict[str, int]
    quarantine_reasons: dict[str, int]
    reference: dict
    data_docs: bool

    @classmethod
    def of(cls, work: WorkRecord, skipped: bool) -> ShardSummary:
        return cls(
            shard_id=work.shard_id,
            run_id=work.run_id,
            skipped=skipped,
            counts=work.counts,
            reject_reasons=dict(work.reject_kinds()),
            quarantine_reasons=dict(work.quarantine_kinds()),
            reference=work.reference or {},
            data_docs=bool(work.data_docs),
        )

    def to_json(self) -> dict:
        return {
            "shard_id": self.shard_id,
            "run_id": self.run_id,
            "skipped": self.skipped,
            **self.counts.to_json(),
            "reject_reasons": self.reject_reasons,
            "quarantine_reasons": self.quarantine_reasons,
            "reference": self.reference,
            "data_docs": self.data_docs,
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardSummary:
        return cls(
            shard_id=data["shard_id"],
            run_id=data["run_id"],
            skipped=data["skipped"],
            counts=Counts.from_json(data),
            reject_reasons=data["reject_reasons"],
            quarantine_reasons=data["quarantine_reasons"],
            reference=data["reference"],
            data_docs=data["data_docs"],
        )
