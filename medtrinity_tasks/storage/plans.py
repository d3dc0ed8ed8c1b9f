"""What a new plan keeps of the shard files that earlier plans of the same source left in the output.

Record ids are stable, so two plans that cut the same inputs differently (another shard size, another
limit) hold the same records in differently named shards. A run that died between its shards and its
publish would leave old and new shards side by side, and a reader of ``shards/*.parquet`` would see
records twice. So the plan, under the run's lease, removes every shard the new plan does not have as
finished work; publishing removes what is left of other shard ids.
"""

from __future__ import annotations

from pathlib import Path

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.storage.shards import manifest_key, source_prefix, work_key
from medtrinity_tasks.storage.store import Store

log = project_logger(__name__)  # de-identified log lines
SHARD_FILES = (("shards", ".parquet"), ("quarantine", ".parquet"), ("work", ".json"), ("reports", ".html"))
RUN_FILES = {"index"}
"""Names in those folders that belong to the run, not to a shard: the quality report's page."""


def finished_alike(prior: dict, shard: dict) -> bool:
    """Whether a shard's work record is this shard's work, done by this pipeline version: then the
    shard is skipped, and a new plan keeps its files."""
    return (
        prior["inputs"] == shard["inputs"]
        and prior.get("engine") == shard.get("engine", "template")
        and prior["pipeline_version"] == PIPELINE_VERSION
    )


def shard_files(store: Store, source_id: str, keep: set[str]) -> dict[str, list[str]]:
    """Every shard file of the source by shard id, less the names in ``keep`` and ``RUN_FILES``."""
    files: dict[str, list[str]] = {}
    for folder, suffix in SHARD_FILES:
        for key in store.list(f"{source_prefix(source_id)}/{folder}/"):
            name = Path(key).name.removesuffix(suffix)
            if key.endswith(suffix) and name not in keep | RUN_FILES:
                files.setdefault(name, []).append(key)
    return files


def remove_replaced_shards(store: Store, source_id: str, shards: list[dict], keep: set[str]) -> list[str]:
    """Remove the files of every shard that the new plan ``shards`` does not have as finished work: other
    shard ids, other inputs under the same id, and unfinished shards (no work record). The published
    manifest goes too when it lists a removed shard: it would name files that are gone, and the run
    publishes a new one. Returns the removed shard ids."""
    planned = {shard["shard_id"]: shard for shard in shards}
    removed = []
    for shard_id, keys in sorted(shard_files(store, source_id, keep).items()):
        shard, wkey = planned.get(shard_id), work_key(source_id, shard_id)
        if shard is not None and wkey in keys and finished_alike(store.read_json(wkey), shard):
            continue
        for key in keys:
            store.delete(key)
        removed.append(shard_id)
    if removed and store.exists(manifest_key(source_id)):
        published = {shard["shard_id"] for shard in store.read_json(manifest_key(source_id))["shards"]}
        if published & set(removed):
            store.delete(manifest_key(source_id))
            log.warning("%s: the published manifest names shards this plan replaces; the run publishes anew", source_id)
    if removed:
        log.info("%s: removed %d shard(s) of an earlier plan: %s", source_id, len(removed), ", ".join(removed))
    return removed


def remove_other_shards(store: Store, source_id: str, shard_ids: set[str]) -> None:
    """At publish: shards left by an earlier plan with other shard ids would duplicate records."""
    for keys in shard_files(store, source_id, shard_ids).values():
        for key in keys:
            store.delete(key)
