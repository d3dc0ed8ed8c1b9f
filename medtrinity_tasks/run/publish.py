"""The run's last steps, from the shards' work records: the quality gate and its report, the run's
manifest (published when the gate passed, the accounting alone when it failed), and the summary of a run
however it ended."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.run.accounting import (
    LISTING,
    Counts,
    ShardSummary,
    WorkRecord,
    by_reason,
    file_totals,
    input_outcomes,
    top_reasons,
)
from medtrinity_tasks.sources.catalog import SourceEntry, get_source
from medtrinity_tasks.storage import Store, open_store
from medtrinity_tasks.storage.lease import release_lease, renew_lease
from medtrinity_tasks.storage.plans import remove_other_shards
from medtrinity_tasks.storage.shards import (
    data_docs_key,
    manifest_key,
    quarantine_key,
    report_key,
    shard_key,
    source_prefix,
    work_key,
)
from medtrinity_tasks.validation.reference import reference_summary
from medtrinity_tasks.validation.report import summary_html


class GateFailed(MedtrinityError):
    """Too few records passed the quality gate to publish the run."""


def gate_source(source_id: str, summaries: list[dict], output_uri: str | None = None) -> dict:
    """Write the run's quality report and return the gate's verdict. When the share of produced records
    that passed is below the source's threshold the run fails, and its manifest still says what became of
    every input, with the verdict and no shard published."""
    settings = load_settings()
    source = get_source(source_id, settings)
    store = open_store(output_uri or settings.output_uri, settings)
    listing = _work(store, source_id, LISTING)
    threshold = source.min_pass_rate if source.min_pass_rate is not None else settings.min_pass_rate
    report = quality_report(
        source_id, [ShardSummary.of(listing, skipped=False), *map(ShardSummary.from_json, summaries)], threshold
    )
    store.write_json(report_key(source_id, "summary.json"), report)
    verdict = _verdict(report, store.write_bytes(report_key(source_id, "index.html"), summary_html(report).encode()))
    if verdict["passed"]:
        return verdict
    shard_ids = [s["shard_id"] for s in summaries]
    _, uri = _write_manifest(store, source, settings, listing, shard_ids, verdict, published=False)
    raise GateFailed(
        f"{verdict['failure']}. Report: {verdict['report_uri']}; quarantined records and reasons: "
        f"{store.key_uri(f'{source_prefix(source_id)}/quarantine/')}; every input's outcome: {uri} "
        f"(medtrinity show {source_id} --inputs)"
    )


def _verdict(report: dict, report_uri: str) -> dict:
    """The gate's verdict as the run's manifest keeps it: passed or not, against which threshold, the
    counts, and why not."""
    totals = report["counts"]
    failure = None
    if not report["passed"]:
        failure = (
            f"{report['source_id']}: pass rate {report['pass_rate']:.2f} is below the threshold "
            f"{report['threshold']:.2f} ({totals['records']} of {totals['produced']} records passed, "
            f"{totals['rejected']} of {totals['inputs']} inputs rejected). Top quarantine reasons: "
            f"{top_reasons(Counter(report['quarantined_by_reason']))}. Top reject reasons: "
            f"{top_reasons(Counter(report['rejected_by_reason']))}"
        )
    return {"passed": report["passed"], "pass_rate": report["pass_rate"], "threshold": report["threshold"],
            **totals, "reference": report["reference"], "report_uri": report_uri, "failure": failure}  # fmt: skip


def quality_report(source_id: str, summaries: list[ShardSummary], threshold: float) -> dict:
    """The gate's report (``reports/summary.json``) over the listing's summary and the shards' after it."""
    totals = Counts.total(s.counts for s in summaries)
    pass_rate = _pass_rate(totals)
    quarantine_reasons = sum((Counter(s.quarantine_reasons) for s in summaries), Counter())
    reject_reasons = sum((Counter(s.reject_reasons) for s in summaries), Counter())
    return {
        "source_id": source_id,
        "run_ids": sorted({s.run_id for s in summaries}),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": pass_rate >= threshold,
        "pass_rate": round(pass_rate, 4),
        "threshold": threshold,
        "counts": totals.to_json(),
        "quarantined_by_reason": dict(quarantine_reasons.most_common()),
        "rejected_by_reason": dict(reject_reasons.most_common()),
        "reference": reference_summary([s.reference for s in summaries]),
        "shards": [
            {
                "shard_id": s.shard_id,
                "records": s.counts.records,
                "quarantined": s.counts.quarantined,
                "data_docs": Path(data_docs_key(source_id, s.shard_id)).name if s.data_docs else None,
            }
            for s in summaries[1:]
        ],
    }


def _pass_rate(counts: Counts) -> float:
    """The share of the records produced that passed the gate."""
    return counts.records / counts.produced if counts.produced else 0.0


def publish_source(source_id: str, summaries: list[dict], output_uri: str | None, verdict: dict) -> dict:
    """Publish the run that passed the gate (``verdict``): its manifest from the shards' accounting;
    then remove the shards this plan no longer has."""
    settings = load_settings()
    source = get_source(source_id, settings)
    store = open_store(output_uri or settings.output_uri, settings)
    listing = _work(store, source_id, LISTING)  # written by this run's plan: it names the run
    shard_ids = [s["shard_id"] for s in summaries]
    manifest, uri = _write_manifest(store, source, settings, listing, shard_ids, verdict, published=True)
    remove_other_shards(store, source_id, {LISTING, *shard_ids})
    release_lease(store, source_id, listing.run_id)
    return {
        "manifest_uri": uri,
        "counts": manifest["counts"],
        "files": manifest["files"],
        "quality": manifest["quality"],
        "rejected_by_reason": manifest["rejected_by_reason"],
        "quarantined_by_reason": manifest["quarantined_by_reason"],
    }


def _write_manifest(
    store: Store,
    source: SourceEntry,
    settings: Settings,
    listing: WorkRecord,
    shard_ids: list[str],
    verdict: dict,
    published: bool,
) -> tuple[dict, str]:
    """The run's manifest from the listing's and the shards' work records, written under the run's lease
    once its counts balance; returns it and its URI."""
    renew_lease(store, source.id, listing.run_id, settings.lease_timeout_s, "publish" if published else "gate")
    works = [_work(store, source.id, shard_id) for shard_id in shard_ids]
    counts = Counts.total(w.counts for w in [listing, *works]).check_balance(source.id, "manifest")
    manifest = _manifest(store, source, listing, works, counts, verdict, published)
    return manifest, store.write_json(manifest_key(source.id), manifest)


def _manifest(
    store: Store,
    source: SourceEntry,
    listing: WorkRecord,
    works: list[WorkRecord],
    counts: Counts,
    verdict: dict,
    published: bool,
) -> dict:
    """The run (``manifest.json``): counts of inputs, records and files, the gate's verdict, the published
    shards (none when the gate failed), every reject and quarantine with its reason, and every input's outcome."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "source_id": source.id,
        "source_name": source.name,
        "licence": source.licence,
        "pipeline_version": PIPELINE_VERSION,
        "run_ids": sorted({w.run_id for w in works}),
        "generator": _generator(works),
        "published": published,
        "published_at": now if published else None,
        "written_at": now,
        "counts": counts.to_json(),
        "files": file_totals([listing, *works]),
        "quality": verdict,
        "shards": [
            {
                "shard_id": w.shard_id,
                "uri": store.key_uri(shard_key(source.id, w.shard_id)),
                "records": w.counts.records,
                "quarantine_uri": store.key_uri(quarantine_key(source.id, w.shard_id)) if w.quarantined else None,
                "quarantined": w.counts.quarantined,
            }
            for w in (works if published else [])
        ],
        **by_reason([listing, *works]),
        "rejected": [r for w in [listing, *works] for r in w.rejected],
        "quarantined": [q for w in works for q in w.quarantined],
        "inputs": input_outcomes([listing, *works]),
    }


def _generator(works: list[WorkRecord]) -> dict:
    """The engine and prompt version that wrote the published descriptions (one per run)."""
    engines = sorted({w.engine or "template" for w in works}) or ["template"]
    return {"engines": engines, "prompt_versions": sorted({PROMPT_VERSIONS[e] for e in engines})}


def summarise_run(source_id: str, shard_ids: list[str], output_uri: str | None = None) -> dict:
    """What a run did, from the work records written so far: counts, rejects and quarantines by
    reason, and the shards that did not finish. Reads the store only, so it can report on a run
    whose gate failed or whose shards did not all finish."""
    settings = load_settings()
    store = open_store(output_uri or settings.output_uri, settings)
    keys = {shard_id: work_key(source_id, shard_id) for shard_id in [LISTING, *shard_ids]}
    works = [WorkRecord.from_json(store.read_json(key)) for key in keys.values() if store.exists(key)]
    return {
        "counts": Counts.total(w.counts for w in works).to_json(),
        "files": file_totals(works),
        **by_reason(works),
        "unfinished_shards": [shard_id for shard_id in shard_ids if not store.exists(keys[shard_id])],
    }


def _work(store: Store, source_id: str, shard_id: str) -> WorkRecord:
    return WorkRecord.from_json(store.read_json(work_key(source_id, shard_id)))
