"""The whole pipeline for a source, in one file: its stages, and the four steps Airflow runs.

    plan_shards  -> process_shard (one per shard, on Ray) -> gate_source -> publish_source

Each step takes and returns small JSON-able dicts (URIs, counts, reasons), never images, so the
same functions serve the Airflow tasks, the ``medtrinity run`` command and the tests.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.generation.openai_engine import OpenAIDescription, check_server
from medtrinity_tasks.generation.template import TemplateDescription
from medtrinity_tasks.generation.vllm_engine import VLLMDescription, check_vllm
from medtrinity_tasks.knowledge.retrieval import RetrieveKnowledge, check_knowledge
from medtrinity_tasks.phi import clean_reason, name_aliases, project_logger
from medtrinity_tasks.preprocess.captions import CoarseCaption
from medtrinity_tasks.preprocess.dicom_series import DicomSeriesSlicer
from medtrinity_tasks.preprocess.planar import PlanarImageLoader
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.roi.experts import DescribeRois, ExpertRois
from medtrinity_tasks.roi.registry import expert_for
from medtrinity_tasks.sources.catalog import SourceEntry, get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.stages import Stage, run_inprocess
from medtrinity_tasks.storage import open_store
from medtrinity_tasks.storage.lease import planning_lease, release_lease, release_quietly, renew_lease
from medtrinity_tasks.storage.plans import finished_alike, remove_other_shards, remove_replaced_shards
from medtrinity_tasks.storage.shards import (
    data_docs_key,
    manifest_key,
    quarantine_key,
    report_key,
    shard_key,
    source_prefix,
    to_parquet,
    work_key,
)
from medtrinity_tasks.validation.consistency import catalog_vocabulary
from medtrinity_tasks.validation.gate import validate_records
from medtrinity_tasks.validation.judge import JudgeDescriptions
from medtrinity_tasks.validation.reference import reference_summary, reference_totals, score_references
from medtrinity_tasks.validation.report import data_docs_html, summary_html

log = project_logger(__name__)  # de-identified log lines
TOP_REASONS = 5
LISTING = "listing"
"""The work record of the inputs a listing rejects before any shard (see ``plan_shards``)."""


class GateFailed(MedtrinityError):
    """Too few records passed the quality gate to publish the run."""


LOADERS = {
    "msd": VolumeSlicer,
    "nnunet": VolumeSlicer,
    "paired_files": VolumeSlicer,
    "series": DicomSeriesSlicer,
    "image_mask": PlanarImageLoader,
    "image_table": PlanarImageLoader,
    "coco": PlanarImageLoader,
    "class_folders": PlanarImageLoader,
}
"""The first stage per source layout: input files -> 2D image rows with their label slices, or rejects."""


DESCRIBERS = {"template": TemplateDescription, "openai": OpenAIDescription, "vllm": VLLMDescription}
"""The description stage per engine name (``generation.ENGINES``)."""


def build_stages(source: SourceEntry, settings: Settings, engine: str = "template") -> list[Stage]:
    if engine not in DESCRIBERS:
        raise MedtrinityError(f"unknown description engine {engine!r}; available: {', '.join(ENGINES)}")
    expert = expert_for(source, settings)
    return [
        LOADERS[source.layout](source, settings),  # input files -> 2D images (or rejects)
        AnnotationRois(source),  # label slices -> described ROIs
        *([ExpertRois(source, expert, settings)] if expert else []),  # images without annotations -> masks
        *([DescribeRois(source, expert)] if expert else []),  # the experts' masks -> described ROIs (CPU)
        CoarseCaption(source),  # metadata -> coarse caption
        *([RetrieveKnowledge(settings)] if settings.knowledge_top_k else []),  # caption + ROIs -> passages
        DESCRIBERS[engine](settings),  # facts -> five-section description
        *([JudgeDescriptions(settings)] if settings.judge else []),  # description -> section scores (optional)
    ]


def plan_shards(
    source_id: str,
    output_uri: str | None = None,
    *,
    limit: int | None = None,
    shard_size: int | None = None,
    force: bool = False,
    run_id: str | None = None,
    engine: str = "template",
    dry_run: bool = False,
    wait_for_lease: bool = False,
) -> list[dict]:
    """List the source and cut its usable inputs into shards. Inputs the listing already rejects
    (unlisted files, stray or non-image files, broken links) are accounted for here, in the
    ``listing`` work record, so that no shard task is spent on them. The run takes the source's lease
    on the output (another run's refuses it, or waits for it) and removes the shards of earlier plans
    that this one replaces. A dry run writes nothing and takes no lease."""
    if engine not in ENGINES:
        raise MedtrinityError(f"unknown description engine {engine!r}; available: {', '.join(ENGINES)}")
    settings = load_settings()
    source = get_source(source_id, settings)
    output_uri = output_uri or settings.output_uri
    store = open_store(output_uri, settings)  # an unreachable store fails here, before any work
    listed = list_inputs(source, settings)[: limit or None]
    if not listed:
        raise MedtrinityError(f"source {source_id}: its layout ({source.layout}) finds no input files")
    if settings.knowledge_top_k:
        check_knowledge(settings)  # an unreachable, missing or mismatched knowledge base fails before any shard
    if (engine == "openai" or settings.judge) and not dry_run:
        check_server(settings)  # and so does an LLM server that does not answer
    if engine == "vllm" and not dry_run:
        check_vllm(settings)  # or a vLLM engine that cannot start here
    run_id = run_id or f"manual__{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"  # unique: it names the lease
    rejected = [
        {"input": item["source_relpath"], "reason": clean_reason(item["reject_reason"])}
        for item in listed
        if item.get("reject_reason")
    ]
    inputs = [item for item in listed if not item.get("reject_reason")]
    if not inputs:  # before the lease: a plan that cannot run leaves the output as it was
        reasons = _top(Counter(reason_kind(r["reason"]) for r in rejected))
        raise MedtrinityError(f"source {source_id}: all {len(listed)} input files are rejected: {reasons}")
    shards = _cut(source_id, inputs, shard_size or settings.shard_size, output_uri, run_id, force, engine)
    if not dry_run:
        with planning_lease(store, source_id, run_id, settings.lease_timeout_s, wait=wait_for_lease):
            remove_replaced_shards(store, source_id, shards, keep={LISTING})
            store.write_json(work_key(source_id, LISTING), _listing_work(source_id, run_id, rejected))
    return shards


def _cut(
    source_id: str, inputs: list[dict], size: int, output_uri: str, run_id: str, force: bool, engine: str
) -> list[dict]:
    """The plan's shards, cut before anything is written: the plan compares them with earlier shards."""
    shards = []
    for start in range(0, len(inputs), size):
        members = inputs[start : start + size]
        shard = {
            "source_id": source_id,
            "shard_id": f"shard-{start // size:05d}",
            "inputs": [item["source_relpath"] for item in members],
            "output_uri": output_uri,
            "run_id": run_id,
            "force": force,
            "engine": engine,
        }
        if any("folders" in item for item in members):  # DICOM: the folders (by pseudonym) its inputs lie in
            shard["scope"] = sorted({folder for item in members for folder in item.get("folders", [])})
        shards.append(shard)
    return shards


def _listing_work(source_id: str, run_id: str, rejected: list[dict]) -> dict:
    """The listing's rejects in the shape of a shard's work record, so gate and publish count them alike."""
    return {
        "source_id": source_id,
        "shard_id": LISTING,
        "run_id": run_id,
        "pipeline_version": PIPELINE_VERSION,
        "inputs": [r["input"] for r in rejected],
        "used": [],
        "rejected": rejected,
        "quarantined": [],
        "counts": {"inputs": len(rejected), "used": 0, "rejected": len(rejected), "produced": 0, "records": 0,
                   "quarantined": 0},
    }  # fmt: skip


def _run_stages(stages: list[Stage], rows: list[dict], settings: Settings) -> list[dict]:
    if settings.runner == "inprocess":
        return run_inprocess(stages, rows)
    if settings.runner != "ray":
        raise MedtrinityError(f"MEDTRINITY_RUNNER must be 'ray' or 'inprocess', got {settings.runner!r}")
    from medtrinity_tasks.stages.ray_runner import run_ray

    return run_ray(stages, rows, settings)


def reason_kind(reason: str) -> str:
    """A reason without its particulars, for counting: 'file is missing: a.png' -> 'file is missing',
    'not a readable image (OSError: ...)' -> 'not a readable image', 'truncated pixel data in
    file-3f9c...' -> 'truncated pixel data in file'."""
    reason = re.sub(r"\b(file|series|folder)-[0-9a-f]{24}\b", r"\1", reason)  # de-identification pseudonyms
    return re.sub(r" \(\w+(: .*)?\)$", "", reason).split(": ", 1)[0]


def _summary(work: dict, skipped: bool) -> dict:
    return {
        "shard_id": work["shard_id"],
        "run_id": work["run_id"],
        "skipped": skipped,
        **work["counts"],
        "reject_reasons": dict(Counter(reason_kind(r["reason"]) for r in work["rejected"])),
        "quarantine_reasons": dict(Counter(reason_kind(r) for q in work["quarantined"] for r in q["reasons"])),
        "reference": work.get("reference") or {},
        "data_docs": bool(work.get("data_docs")),
    }


def process_shard(shard: dict) -> dict:
    """Run the stages over one shard's inputs, gate the records, and write shard, quarantine and
    accounting. A shard finished by this pipeline version is skipped unless ``force``."""
    settings = load_settings()
    source = get_source(shard["source_id"], settings)
    store = open_store(shard["output_uri"], settings)
    renew_lease(store, source.id, shard["run_id"], settings.lease_timeout_s, shard["shard_id"])
    wkey = work_key(source.id, shard["shard_id"])
    relpaths = shard["inputs"]
    if not shard.get("force") and store.exists(wkey):
        prior = store.read_json(wkey)
        if finished_alike(prior, shard):
            log.info("%s %s already finished; skipping (force to redo)", source.id, shard["shard_id"])
            return _summary(prior, skipped=True)

    started = time.monotonic()
    stages = build_stages(source, settings, shard.get("engine", "template"))
    # Shards name their inputs by key only (XCom and task logs never carry file lists or
    # annotations); the source is listed again here, within the shard's scope where it has one.
    listing = {item["source_relpath"]: item for item in list_inputs(source, settings, shard.get("scope"))}
    gone = {"reject_reason": "no longer in the source: it changed after the run was planned"}
    inputs = [dict(listing.get(key) or dict(gone, source_relpath=key), source_id=source.id) for key in relpaths]
    rows = _run_stages(stages, inputs, settings)

    rejected = {}  # input relpath -> reason
    stage_quarantined, candidates = [], []
    for row in rows:
        if row.get("reject_reason"):
            rejected[row["source_relpath"]] = clean_reason(row["reject_reason"], name_aliases(row))
        elif not row.get("id"):  # failed before it became a record: the input is rejected
            rejected[row["source_relpath"]] = clean_reason("; ".join(row["quarantine_reasons"]), name_aliases(row))
        else:
            row = _with_provenance(row, source, shard["run_id"], stages)
            if row.get("quarantine_reasons"):  # a stage's error message may quote what it read
                names = name_aliases(row)
                row["quarantine_reasons"] = [clean_reason(reason, names) for reason in row["quarantine_reasons"]]
            (stage_quarantined if row.get("quarantine_reasons") else candidates).append(row)
    vocab = catalog_vocabulary(settings)
    scores = score_references(candidates, vocab)  # against the source's human text, where it has any
    for row, score in zip(candidates, scores, strict=True):
        row["quality"] = dict(row.get("quality") or {}, reference=score)
    passed, gate_quarantined, validation = validate_records(candidates, vocab)
    quarantined = stage_quarantined + gate_quarantined
    used = sorted({row["source_relpath"] for row in passed + quarantined} - set(rejected))
    missing = set(relpaths) - set(used) - set(rejected)
    if missing:
        raise MedtrinityError(f"accounting broken: inputs {sorted(missing)} yielded neither records nor a reject")

    renew_lease(store, source.id, shard["run_id"], settings.lease_timeout_s, shard["shard_id"])  # still ours?
    store.write_bytes(shard_key(source.id, shard["shard_id"]), to_parquet(passed))
    qkey = quarantine_key(source.id, shard["shard_id"])
    if quarantined:
        store.write_bytes(qkey, to_parquet(quarantined, quarantine=True))
    else:
        store.delete(qkey)
    dkey = data_docs_key(source.id, shard["shard_id"])
    if validation is not None:
        store.write_bytes(dkey, data_docs_html(validation).encode())
    else:
        store.delete(dkey)
    work = {
        "source_id": source.id,
        "shard_id": shard["shard_id"],
        "run_id": shard["run_id"],
        "pipeline_version": PIPELINE_VERSION,
        "engine": shard.get("engine", "template"),
        "inputs": relpaths,
        "used": used,
        "rejected": [{"input": path, "reason": reason} for path, reason in sorted(rejected.items())],
        "quarantined": [
            {
                "id": q["id"],
                "input": q["source_relpath"],
                "slice_index": q["slice_index"],
                "reasons": q["quarantine_reasons"],
            }
            for q in quarantined
        ],
        "counts": {
            "inputs": len(relpaths),
            "used": len(used),
            "rejected": len(rejected),
            "produced": len(passed) + len(quarantined),
            "records": len(passed),
            "quarantined": len(quarantined),
        },
        "reference": reference_totals(scores),
        "data_docs": validation is not None,
        "seconds": round(time.monotonic() - started, 3),
    }
    store.write_json(wkey, work)  # written last: its presence marks the shard finished
    return _summary(work, skipped=False)


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


def _totals(summaries: list[dict]) -> dict:
    keys = ("inputs", "used", "rejected", "produced", "records", "quarantined")
    return {key: sum(s[key] for s in summaries) for key in keys}


def _top(reasons: Counter) -> str:
    return "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(TOP_REASONS)) or "none"


def gate_source(source_id: str, summaries: list[dict], output_uri: str | None = None) -> dict:
    """Write the run's quality report, then fail the run when the share of produced records that
    passed is below the source's threshold."""
    settings = load_settings()
    source = get_source(source_id, settings)
    store = open_store(output_uri or settings.output_uri, settings)
    summaries = [_summary(store.read_json(work_key(source_id, LISTING)), skipped=False), *summaries]
    threshold = source.min_pass_rate if source.min_pass_rate is not None else settings.min_pass_rate
    totals = _totals(summaries)
    pass_rate = totals["records"] / totals["produced"] if totals["produced"] else 0.0
    quarantine_reasons = sum((Counter(s["quarantine_reasons"]) for s in summaries), Counter())
    reject_reasons = sum((Counter(s["reject_reasons"]) for s in summaries), Counter())
    report = {
        "source_id": source_id,
        "run_ids": sorted({s["run_id"] for s in summaries}),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "passed": pass_rate >= threshold,
        "pass_rate": round(pass_rate, 4),
        "threshold": threshold,
        "counts": totals,
        "quarantined_by_reason": dict(quarantine_reasons.most_common()),
        "rejected_by_reason": dict(reject_reasons.most_common()),
        "reference": reference_summary([s["reference"] for s in summaries]),
        "shards": [
            {
                "shard_id": s["shard_id"],
                "records": s["records"],
                "quarantined": s["quarantined"],
                "data_docs": Path(data_docs_key(source_id, s["shard_id"])).name if s["data_docs"] else None,
            }
            for s in summaries[1:]
        ],
    }
    store.write_json(report_key(source_id, "summary.json"), report)
    where = store.write_bytes(report_key(source_id, "index.html"), summary_html(report).encode())
    if pass_rate < threshold:
        raise GateFailed(
            f"{source_id}: pass rate {pass_rate:.2f} is below the threshold {threshold:.2f} "
            f"({totals['records']} of {totals['produced']} records passed, {totals['rejected']} of "
            f"{totals['inputs']} inputs rejected). Top quarantine reasons: {_top(quarantine_reasons)}. "
            f"Top reject reasons: {_top(reject_reasons)}. Report: {where}; quarantined records and reasons: "
            f"{store.key_uri(f'{source_prefix(source_id)}/quarantine/')}"
        )
    return {
        "pass_rate": report["pass_rate"],
        "threshold": threshold,
        **totals,
        "reference": report["reference"],
        "report_uri": where,
    }


def publish_source(
    source_id: str, summaries: list[dict], output_uri: str | None = None, verdict: dict | None = None
) -> dict:
    """Write the run's manifest from the shards' accounting; remove shards this plan no longer has."""
    settings = load_settings()
    source = get_source(source_id, settings)
    store = open_store(output_uri or settings.output_uri, settings)
    listing = store.read_json(work_key(source_id, LISTING))  # written by this run's plan: it names the run
    renew_lease(store, source_id, listing["run_id"], settings.lease_timeout_s, "publish")
    works = [store.read_json(work_key(source_id, s["shard_id"])) for s in summaries]
    counts = _totals([w["counts"] for w in [listing, *works]])
    if (
        counts["inputs"] != counts["used"] + counts["rejected"]
        or counts["produced"] != counts["records"] + counts["quarantined"]
    ):
        raise MedtrinityError(f"{source_id}: manifest accounting does not balance: {counts}")
    remove_other_shards(store, source_id, {LISTING, *(w["shard_id"] for w in works)})
    manifest = {
        "source_id": source_id,
        "source_name": source.name,
        "licence": source.licence,
        "pipeline_version": PIPELINE_VERSION,
        "run_ids": sorted({w["run_id"] for w in works}),
        "generator": _generator(works),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": counts,
        "quality": verdict or {},
        "shards": [
            {
                "shard_id": w["shard_id"],
                "uri": store.key_uri(shard_key(source_id, w["shard_id"])),
                "records": w["counts"]["records"],
                "quarantine_uri": store.key_uri(quarantine_key(source_id, w["shard_id"])) if w["quarantined"] else None,
                "quarantined": w["counts"]["quarantined"],
            }
            for w in works
        ],
        **_by_reason([listing, *works]),
        "rejected": [r for w in [listing, *works] for r in w["rejected"]],
        "quarantined": [q for w in works for q in w["quarantined"]],
    }
    uri = store.write_json(manifest_key(source_id), manifest)
    release_lease(store, source_id, listing["run_id"])
    return {
        "manifest_uri": uri,
        "counts": counts,
        "quality": manifest["quality"],
        "rejected_by_reason": manifest["rejected_by_reason"],
        "quarantined_by_reason": manifest["quarantined_by_reason"],
    }


def _by_reason(works: list[dict]) -> dict:
    """Rejected inputs and quarantined records counted by reason kind, most frequent first."""
    rejected = Counter(reason_kind(r["reason"]) for w in works for r in w["rejected"])
    quarantined = Counter(reason_kind(reason) for w in works for q in w["quarantined"] for reason in q["reasons"])
    return {
        "rejected_by_reason": dict(rejected.most_common()),
        "quarantined_by_reason": dict(quarantined.most_common()),
    }


def summarise_run(source_id: str, shard_ids: list[str], output_uri: str | None = None) -> dict:
    """What a run did, from the work records written so far: counts, rejects and quarantines by
    reason, and the shards that did not finish. Reads the store only, so it can report on a run
    whose gate failed or whose shards did not all finish."""
    settings = load_settings()
    store = open_store(output_uri or settings.output_uri, settings)
    keys = {shard_id: work_key(source_id, shard_id) for shard_id in [LISTING, *shard_ids]}
    works = [store.read_json(key) for key in keys.values() if store.exists(key)]
    return {
        "counts": _totals([w["counts"] for w in works]),
        **_by_reason(works),
        "unfinished_shards": [shard_id for shard_id in shard_ids if not store.exists(keys[shard_id])],
    }


def _generator(works: list[dict]) -> dict:
    """The engine and prompt version that wrote the published descriptions (one per run)."""
    engines = sorted({w.get("engine", "template") for w in works}) or ["template"]
    return {"engines": engines, "prompt_versions": sorted({DESCRIBERS[e].version for e in engines})}


def run_source(
    source_id: str,
    output_uri: str | None = None,
    *,
    limit: int | None = None,
    shard_size: int | None = None,
    force: bool = False,
    engine: str = "template",
    progress=print,
    wait_for_lease: bool = False,
) -> dict:
    """Plan, process, gate and publish one source without Airflow (the ``medtrinity run`` command)."""
    shards = plan_shards(
        source_id, output_uri, limit=limit, shard_size=shard_size, force=force, engine=engine,
        wait_for_lease=wait_for_lease,
    )  # fmt: skip
    total_inputs = sum(len(s["inputs"]) for s in shards)
    progress(f"{source_id}: {total_inputs} usable inputs in {len(shards)} shard(s)")
    output_uri, run_id = shards[0]["output_uri"], shards[0]["run_id"]  # a plan without shards has raised
    try:
        summaries = []
        for number, shard in enumerate(shards, 1):
            summary = process_shard(shard)
            summaries.append(summary)
            state = "skipped (finished earlier)" if summary["skipped"] else "done"
            progress(
                f"  [{number}/{len(shards)}] {shard['shard_id']} {state}: {summary['records']} records, "
                f"{summary['quarantined']} quarantined, {summary['rejected']} inputs rejected"
            )
        verdict = gate_source(source_id, summaries, output_uri)
        return publish_source(source_id, summaries, output_uri, verdict)
    except BaseException:
        release_quietly(output_uri, source_id, run_id)  # publish released it on success
        raise
