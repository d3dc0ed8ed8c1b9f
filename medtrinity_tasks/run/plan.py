"""The run's first step: list a source, account for what the listing rejects, cut the rest into shards."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.generation.openai_engine import check_server
from medtrinity_tasks.generation.vllm_engine import check_vllm
from medtrinity_tasks.knowledge.retrieval import check_knowledge
from medtrinity_tasks.phi import clean_reason
from medtrinity_tasks.reasons import reject_of
from medtrinity_tasks.run.accounting import LISTING, Counts, WorkRecord, file_counts, top_reasons
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.storage import open_store
from medtrinity_tasks.storage.lease import planning_lease
from medtrinity_tasks.storage.plans import remove_replaced_shards
from medtrinity_tasks.storage.shards import work_key


@dataclass(frozen=True)
class Shard:
    """One shard task's work, as the plan hands it over (XCom): its inputs by key only (XCom and task
    logs never carry file lists or annotations), where to write, and for DICOM the folders and 2D objects (by
    pseudonym) its inputs lie in (``scope``), so that the task lists only those again."""

    source_id: str
    shard_id: str
    inputs: list[str]
    output_uri: str
    run_id: str
    force: bool = False
    engine: str = "template"
    scope: list[str] | None = None

    def to_json(self) -> dict:
        data = {
            "source_id": self.source_id,
            "shard_id": self.shard_id,
            "inputs": self.inputs,
            "output_uri": self.output_uri,
            "run_id": self.run_id,
            "force": self.force,
            "engine": self.engine,
        }
        return data if self.scope is None else dict(data, scope=self.scope)

    @classmethod
    def from_json(cls, data: dict) -> Shard:
        return cls(
            source_id=data["source_id"],
            shard_id=data["shard_id"],
            inputs=data["inputs"],
            output_uri=data["output_uri"],
            run_id=data["run_id"],
            force=bool(data.get("force")),
            engine=data.get("engine", "template"),
            scope=data.get("scope"),
        )


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
    _check_services(settings, engine, dry_run)
    run_id = run_id or f"manual__{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"  # unique: it names the lease
    inputs, rejected = _usable(source_id, listed)
    template = Shard(source_id, "", [], output_uri, run_id, force, engine)
    shards = cut(template, inputs, shard_size or settings.shard_size)
    if not dry_run:
        with planning_lease(store, source_id, run_id, settings.lease_timeout_s, wait=wait_for_lease):
            remove_replaced_shards(store, source_id, [shard.to_json() for shard in shards], keep={LISTING})
            listing = listing_work(source_id, run_id, rejected, file_counts(listed))
            store.write_json(work_key(source_id, LISTING), listing.to_json())
    return [shard.to_json() for shard in shards]


def _check_services(settings: Settings, engine: str, dry_run: bool) -> None:
    """What the shards will need answers before any shard starts."""
    if settings.knowledge_top_k:
        check_knowledge(settings)  # an unreachable, missing or mismatched knowledge base fails before any shard
    if (engine == "openai" or settings.judge) and not dry_run:
        check_server(settings.llm_url)  # and so does an LLM server that does not answer
    if engine == "vllm" and not dry_run:
        check_vllm(settings)  # or a vLLM engine that cannot start here


def _usable(source_id: str, listed: list[dict]) -> tuple[list[dict], list[dict]]:
    """The listing's usable inputs, and its rejects as ``{"input", "reason", "kind"}``; a listing of
    rejects only fails here, before the lease: a plan that cannot run leaves the output as it was."""
    rejected = [
        {"input": item["source_relpath"], "reason": clean_reason(reason.text), "kind": reason.kind}
        for item in listed
        if (reason := reject_of(item))
    ]
    inputs = [item for item in listed if not item.get("reject_reason")]
    if not inputs:
        reasons = top_reasons(Counter(r["kind"] for r in rejected))
        raise MedtrinityError(f"source {source_id}: all {len(listed)} input files are rejected: {reasons}")
    return inputs, rejected


def cut(template: Shard, inputs: list[dict], size: int) -> list[Shard]:
    """The plan's shards of ``size`` inputs each, like ``template`` but for their ids, inputs and
    scope; cut before anything is written, since the plan compares them with earlier shards."""
    shards = []
    for start in range(0, len(inputs), size):
        members = inputs[start : start + size]
        scope = None
        if any("scope" in item for item in members):  # DICOM: the pseudonyms a listing finds its inputs by
            scope = sorted({name for item in members for name in item.get("scope", [])})
        shard_id, keys = f"shard-{start // size:05d}", [item["source_relpath"] for item in members]
        shards.append(replace(template, shard_id=shard_id, inputs=keys, scope=scope))
    return shards


def listing_work(source_id: str, run_id: str, rejected: list[dict], files: dict[str, int]) -> WorkRecord:
    """The listing's rejects in the shape of a shard's work record, so gate and publish count them alike,
    with the file count of every input listed (``files``), used or not: only the plan sees them all."""
    return WorkRecord(
        source_id=source_id,
        shard_id=LISTING,
        run_id=run_id,
        inputs=[r["input"] for r in rejected],
        used=[],
        rejected=rejected,
        quarantined=[],
        counts=Counts(inputs=len(rejected), rejected=len(rejected)),
        files=files,
    )
