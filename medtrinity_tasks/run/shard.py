"""One shard task: run the stages over the shard's inputs, gate the records, and write shard,
quarantine, Data Docs page and the work record that accounts for every input."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.phi import clean_reason, name_aliases, project_logger
from medtrinity_tasks.reasons import Reason, quarantine_of, quarantined, reject_of, rejected
from medtrinity_tasks.run.accounting import Counts, ShardSummary, WorkRecord
from medtrinity_tasks.run.pipeline import build_stages, run_stages
from medtrinity_tasks.run.plan import Shard
from medtrinity_tasks.sources.catalog import SourceEntry, get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.stages import Stage
from medtrinity_tasks.storage import Store, open_store
from medtrinity_tasks.storage.lease import renew_lease
from medtrinity_tasks.storage.plans import finished_alike
from medtrinity_tasks.storage.shards import data_docs_key, quarantine_key, shard_key, to_parquet, work_key
from medtrinity_tasks.validation.consistency import catalog_vocabulary
from medtrinity_tasks.validation.gate import validate_records
from medtrinity_tasks.validation.reference import reference_totals, score_references
from medtrinity_tasks.validation.report import data_docs_html

log = project_logger(__name__)  # de-identified log lines
GONE = Reason.of("no longer in the source", "it changed after the run was planned")


@dataclass(frozen=True)
class Outcome:
    """How a shard's rows ended: inputs rejected (key -> reason), records passed and quarantined."""

    rejected: dict[str, Reason]
    passed: list[dict]
    quarantined: list[dict]
    reference: dict
    validation: object | None
    """The suite's result, for the shard's Data Docs page; None when no record reached the suite."""

    @property
    def used(self) -> list[str]:
        return sorted({row["source_relpath"] for row in self.passed + self.quarantined} - set(self.rejected))


def process_shard(shard: dict) -> dict:
    """Run the stages over one shard's inputs, gate the records, and write shard, quarantine and
    accounting. A shard finished by this pipeline version is skipped unless ``force``. Takes the
    plan's shard and returns its ``ShardSummary``, both as plain JSON (XCom)."""
    plan = Shard.from_json(shard)
    settings = load_settings()
    source = get_source(plan.source_id, settings)
    store = open_store(plan.output_uri, settings)
    renew_lease(store, source.id, plan.run_id, settings.lease_timeout_s, plan.shard_id)
    wkey = work_key(source.id, plan.shard_id)
    if not plan.force and store.exists(wkey):
        prior = store.read_json(wkey)
        if finished_alike(prior, shard):
            log.info("%s %s already finished; skipping (force to redo)", source.id, plan.shard_id)
            return ShardSummary.of(WorkRecord.from_json(prior), skipped=True).to_json()

    started = time.monotonic()
    stages = build_stages(source, settings, plan.engine)
    rows = run_stages(stages, _inputs(source, settings, plan), settings)
    outcome = _gate(*_sort_rows(rows, source, plan.run_id, stages), settings)
    counts = _counts(plan, outcome)
    renew_lease(store, source.id, plan.run_id, settings.lease_timeout_s, plan.shard_id)  # still ours?
    _write_records(store, plan, outcome)
    work = _work_record(plan, outcome, counts, seconds=round(time.monotonic() - started, 3))
    store.write_json(wkey, work.to_json())  # written last: its presence marks the shard finished
    return ShardSummary.of(work, skipped=False).to_json()


def _inputs(source: SourceEntry, settings: Settings, plan: Shard) -> list[dict]:
    """The shard's inputs, from the source listed again (within the shard's scope where it has one):
    shards name their inputs by key only. An input gone since the plan is a reject."""
    listing = {item["source_relpath"]: item for item in list_inputs(source, settings, plan.scope)}
    return [
        dict(listing.get(key) or rejected({"source_relpath": key}, GONE), source_id=source.id) for key in plan.inputs
    ]


def _sort_rows(
    rows: list[dict], source: SourceEntry, run_id: str, stages: list[Stage]
) -> tuple[dict[str, Reason], list[dict], list[dict]]:
    """The stages' rows as rejected inputs (key -> de-identified reason), records a stage quarantined,
    and the records that go to the gate; records get their provenance. A stage's error message may
    quote what it read: every reason's text is de-identified here."""
    rejects, held, candidates = {}, [], []
    for row in rows:
        names, reject, reasons = name_aliases(row), reject_of(row), quarantine_of(row)
        if reject:
            rejects[row["source_relpath"]] = reject.reworded(clean_reason(reject.text, names))
        elif not row.get("id"):  # failed before it became a record: the input is rejected, as its first reason
            joined = "; ".join(reason.text for reason in reasons)
            rejects[row["source_relpath"]] = reasons[0].reworded(clean_reason(joined, names))
        elif reasons:
            row = _with_provenance(row, source, run_id, stages)
            held.append(quarantined(row, [reason.reworded(clean_reason(reason.text, names)) for reason in reasons]))
        else:
            candidates.append(_with_provenance(row, source, run_id, stages))
    return rejects, held, candidates


def _with_provenance(row: dict, source: SourceEntry, run_id: str, stages: list[Stage]) -> dict:
    return dict(
        row,
        source_id=source.id,
        knowledge=row.get("knowledge") or [],
        provenance={
            "source_name": source.name,
            "licence": source.licence,
            "pipeline_version": PIPELINE_VERSION,
            "run_id": run_id,
            "stages": [{"name": stage.name, "version": stage.version} for stage in stages],
        },
    )


def _gate(
    rejects: dict[str, Reason], stage_quarantined: list[dict], candidates: list[dict], settings: Settings
) -> Outcome:
    """Reference scores (against the source's human text, where it has any), then the record suite."""
    vocab = catalog_vocabulary(settings)
    scores = score_references(candidates, vocab)
    for row, score in zip(candidates, scores, strict=True):
        row["quality"] = dict(row.get("quality") or {}, reference=score)
    passed, gate_quarantined, validation = validate_records(candidates, vocab)
    return Outcome(rejects, passed, stage_quarantined + gate_quarantined, reference_totals(scores), validation)


def _counts(plan: Shard, outcome: Outcome) -> Counts:
    """The shard's counts, checked before anything of the shard is written."""
    used = outcome.used
    counts = Counts(
        inputs=len(plan.inputs),
        used=len(used),
        rejected=len(outcome.rejected),
        produced=len(outcome.passed) + len(outcome.quarantined),
        records=len(outcome.passed),
        quarantined=len(outcome.quarantined),
    )
    unaccounted = set(plan.inputs) - set(used) - set(outcome.rejected)
    return counts.check_balance(plan.source_id, plan.shard_id, unaccounted)


def _write_records(store: Store, plan: Shard, outcome: Outcome) -> None:
    """The shard's Parquet files and Data Docs page; those an earlier try wrote and this one has not go."""
    store.write_bytes(shard_key(plan.source_id, plan.shard_id), to_parquet(outcome.passed))
    qkey = quarantine_key(plan.source_id, plan.shard_id)
    if outcome.quarantined:
        store.write_bytes(qkey, to_parquet(outcome.quarantined, quarantine=True))
    else:
        store.delete(qkey)
    dkey = data_docs_key(plan.source_id, plan.shard_id)
    if outcome.validation is not None:
        store.write_bytes(dkey, data_docs_html(outcome.validation).encode())
    else:
        store.delete(dkey)


def _work_record(plan: Shard, outcome: Outcome, counts: Counts, seconds: float) -> WorkRecord:
    passed = Counter(row["source_relpath"] for row in outcome.passed)
    return WorkRecord(
        source_id=plan.source_id,
        shard_id=plan.shard_id,
        run_id=plan.run_id,
        engine=plan.engine,
        inputs=plan.inputs,
        used=outcome.used,
        rejected=[
            {"input": path, "reason": reason.text, "kind": reason.kind}
            for path, reason in sorted(outcome.rejected.items())
        ],
        quarantined=[
            {
                "id": q["id"],
                "input": q["source_relpath"],
                "slice_index": q["slice_index"],
                "reasons": q["quarantine_reasons"],
                "kinds": q["quarantine_kinds"],
            }
            for q in outcome.quarantined
        ],
        counts=counts,
        records={key: passed[key] for key in outcome.used},
        reference=outcome.reference,
        data_docs=outcome.validation is not None,
        seconds=seconds,
    )
