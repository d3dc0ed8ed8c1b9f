"""What the steps hand each other and write to the store: counts that must balance, a shard's work
record, the summary a shard task returns, reasons counted by kind, and each input's files and outcome.

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


def file_counts(items: Iterable[dict]) -> dict[str, int]:
    """How many files each input of a listing stands for, each file counted once, with the first input
    (by name) that names it, so that the counts add up to the files the listing holds. A DICOM series
    names its images and its SEG and RTSTRUCT files, any other input its own file and its label file; a
    file that inputs share (a SEG two series claim, the label of a case's channels) counts with the first."""
    counts, seen = {}, set()
    for item in sorted(items, key=lambda item: item["source_relpath"]):
        if item.get("member_files") is not None:
            named = {*item["member_files"], *(item.get("annotation_files") or [])}
        else:
            named = {item.get("file_relpath") or item["source_relpath"], *filter(None, [item.get("label_relpath")])}
        counts[item["source_relpath"]] = len(named - seen)
        seen |= named
    return counts


@dataclass(frozen=True)
class WorkRecord:
    """A shard's accounting in the store (``work/<shard>.json``), written last: its presence marks the
    shard finished. ``rejected`` holds ``{"input", "reason", "kind"}``, ``quarantined`` ``{"id", "input",
    "slice_index", "reasons", "kinds"}`` (each reason's kind, see ``reasons.Reason``), ``records`` each used
    input's records that passed. Only the listing's record has ``files``: the plan alone sees every input's
    files, so it holds the count of each listed input, used or not (``file_counts``). The listing's record has
    no engine, reference scores, Data Docs, time or records; records written before files and records were
    kept have neither."""

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
    files: dict[str, int] | None = None
    records: dict[str, int] | None = None
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


def _listed_files(works: list[WorkRecord]) -> dict[str, int] | None:
    """Each listed input's file count, from the listing's work record; None where it kept none."""
    return next((w.files for w in works if w.shard_id == LISTING), None)


def file_totals(works: Iterable[WorkRecord]) -> dict | None:
    """The files of the used and of the rejected inputs; None when the listing's record kept no counts."""
    works = list(works)
    files = _listed_files(works)
    if files is None:
        return None
    used = sum(files[key] for w in works for key in w.used)
    rejected = sum(files[r["input"]] for w in works for r in w.rejected)
    return {"files": used + rejected, "used": used, "rejected": rejected}


def input_outcomes(works: Iterable[WorkRecord]) -> list[dict]:
    """One row per input, sorted by its name (the published path or pseudonym): its files, the records it
    gave (passed and quarantined), and its outcome: ``records`` (some passed), ``quarantined`` (none passed),
    ``rejected`` with the reason, or ``used`` where the work record did not keep its records. Counts the work
    records did not keep are None."""
    works = list(works)
    files = _listed_files(works)
    rows = []
    for work in works:
        reasons = {r["input"]: r["reason"] for r in work.rejected}
        held = Counter(q["input"] for q in work.quarantined)
        for key in work.inputs:
            records = None if work.records is None else work.records.get(key, 0)
            if key in reasons:
                outcome = "rejected"
            else:
                outcome = "used" if records is None else "records" if records else "quarantined"
            rows.append(
                {
                    "input": key,
                    "files": None if files is None else files[key],
                    "outcome": outcome,
                    "records": 0 if key in reasons else records,
                    "quarantined": held[key],
                    "reason": reasons.get(key),
                }
            )
    return sorted(rows, key=lambda row: row["input"])


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
