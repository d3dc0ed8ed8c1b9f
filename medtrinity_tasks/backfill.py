"""Which catalog sources need a build: never built, or built by another pipeline or prompt version.

The backfill DAG triggers the per-source DAGs this names; a source that is not staged cannot be
built and is reported, not triggered. Reads manifests only, so it is cheap enough to run often.
"""

from __future__ import annotations

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.sources.catalog import SourceEntry, load_catalog


def current_prompt_versions() -> list[str]:
    return sorted(set(PROMPT_VERSIONS.values()))


def build_status(output_uri: str | None = None) -> list[dict]:
    """One row per catalog source: ``{"source_id", "needs_build", "reason"}``, sorted by source id."""
    from medtrinity_tasks.storage import open_store
    from medtrinity_tasks.storage.shards import manifest_key

    settings = load_settings()
    store = open_store(output_uri or settings.output_uri, settings)
    prompts = set(current_prompt_versions())
    rows = []
    for source_id, entry in sorted(load_catalog(settings).items()):
        staged = _staged(entry, settings)
        if staged is not True:
            rows.append({"source_id": source_id, "needs_build": False, "reason": staged})
            continue
        if not store.exists(manifest_key(source_id)):
            rows.append({"source_id": source_id, "needs_build": True, "reason": "never built"})
            continue
        manifest = store.read_json(manifest_key(source_id))
        built_prompts = set((manifest.get("generator") or {}).get("prompt_versions") or [])
        if manifest.get("pipeline_version") != PIPELINE_VERSION:
            reason = f"built by pipeline {manifest.get('pipeline_version')} (now {PIPELINE_VERSION})"
        elif not manifest.get("published", True):  # the same inputs would fail again: said, not retried
            verdict = manifest.get("quality") or {}
            failed = f"its last run failed the quality gate ({verdict.get('failure') or 'see medtrinity show'})"
            rows.append({"source_id": source_id, "needs_build": False, "reason": failed})
            continue
        elif not built_prompts <= prompts or not built_prompts:
            reason = f"built with prompt {', '.join(sorted(built_prompts)) or 'unknown'} (now {', '.join(prompts)})"
        else:
            rows.append({"source_id": source_id, "needs_build": False, "reason": "up to date"})
            continue
        rows.append({"source_id": source_id, "needs_build": True, "reason": reason})
    return rows


def _staged(entry: SourceEntry, settings) -> bool | str:
    """True, or why the source cannot be built now."""
    try:
        uri = entry.location_uri(settings)
    except MedtrinityError:
        return "not staged: its location names an environment variable that is not set"
    if uri.startswith(("s3://", "http://", "https://")):
        return True  # listed (and mirrored) when its DAG runs
    try:
        path = entry.location_path(settings)
    except MedtrinityError as exc:  # a location outside the data directory: said, not fatal to the others
        return f"not staged: {exc}"
    return True if path.is_dir() else "not staged: its location does not exist"
