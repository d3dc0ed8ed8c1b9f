"""What the browser pages show, read from the output store: per-source counts and pass rates,
recent failure records, and pages of records from a source's shards or its quarantine.

Every key is built from names found in the catalog or a manifest, never from a request's text, so
a request cannot reach outside a source's files.
"""

from __future__ import annotations

import io

from medtrinity_tasks.backfill import build_status
from medtrinity_tasks.sources.catalog import load_catalog
from medtrinity_tasks.storage import Store
from medtrinity_tasks.storage.shards import manifest_key, quarantine_key, shard_key, source_prefix

PAGE_SIZE = 12
FAILURES_SHOWN = 20
RECORD_COLUMNS = [
    "id", "source_relpath", "modality", "sequence", "organ", "diseases", "width", "height", "axis", "slice_index",
    "spacing_mm", "rois", "coarse_caption", "reference_text", "knowledge", "description", "generator", "quality",
]  # fmt: skip
"""Everything a record card shows; the image is fetched separately, drawn with its ROIs."""


class NotFound(LookupError):
    """No such source, shard or record in the store."""


def source_summaries(store: Store) -> list[dict]:
    """One row per catalog source, published sources first: build status, and counts and pass rate
    where it was published."""
    rows = []
    for status in build_status(store.uri):
        manifest = read_manifest(store, status["source_id"], missing_ok=True)
        published = manifest is not None and manifest.get("published", True)
        row = {"source_id": status["source_id"], "status": status["reason"], "published": published}
        if manifest is not None:
            row.update(
                name=manifest["source_name"],
                counts=manifest["counts"],
                pass_rate=(manifest.get("quality") or {}).get("pass_rate"),
                published_at=manifest["published_at"],
                pipeline_version=manifest["pipeline_version"],
                top_reasons=_top_reasons(manifest),
            )
        rows.append(row)
    return sorted(rows, key=lambda row: not row["published"])  # stable: by source id within each group


def _top_reasons(manifest: dict, count: int = 3) -> list[tuple[str, int]]:
    reasons = {**manifest.get("rejected_by_reason", {}), **manifest.get("quarantined_by_reason", {})}
    return sorted(reasons.items(), key=lambda item: -item[1])[:count]


def recent_failures(store: Store, source_ids: list[str], limit: int = FAILURES_SHOWN) -> list[dict]:
    """The newest failure records (``airflow_glue.failures.record_failure``) across ``source_ids``."""
    records = []
    for source_id in source_ids:
        keys = store.list(f"{source_prefix(source_id)}/failures/")
        for key in sorted(keys, reverse=True)[:limit]:
            records.append(store.read_json(key))
    records.sort(key=lambda record: record.get("failed_at") or "", reverse=True)
    return records[:limit]


def read_manifest(store: Store, source_id: str, missing_ok: bool = False) -> dict | None:
    if source_id not in load_catalog():
        raise NotFound(f"no source {source_id} in the catalog")
    key = manifest_key(source_id)
    if not store.exists(key):
        if missing_ok:
            return None
        raise NotFound(f"source {source_id} has not been published to {store.uri}")
    return store.read_json(key)


def _shard_keys(manifest: dict, quarantined: bool) -> list[tuple[str, str, int]]:
    """(shard id, key, row count) of the manifest's shards that hold rows of the asked kind."""
    count_field = "quarantined" if quarantined else "records"
    key_of = quarantine_key if quarantined else shard_key
    return [
        (shard["shard_id"], key_of(manifest["source_id"], shard["shard_id"]), shard[count_field])
        for shard in manifest["shards"]
        if shard[count_field]
    ]


def _read_table(store: Store, key: str, columns: list[str]):
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(store.read_bytes(key)), columns=columns)


def records_page(store: Store, source_id: str, page: int, quarantined: bool = False) -> tuple[list[dict], int]:
    """Page ``page`` (from 0) of a source's records, or of its quarantined records with their
    reasons, and the total. Only the shards that hold the page are read, without their images."""
    manifest = read_manifest(store, source_id)
    shards = _shard_keys(manifest, quarantined)
    total = sum(rows for _, _, rows in shards)
    columns = RECORD_COLUMNS + (["quarantine_reasons"] if quarantined else [])
    start, records = page * PAGE_SIZE, []
    for shard_id, key, rows in shards:
        if start >= rows:
            start -= rows
            continue
        table = _read_table(store, key, columns).slice(start, PAGE_SIZE - len(records))
        records += [dict(record, shard_id=shard_id) for record in table.to_pylist()]
        start = 0
        if len(records) == PAGE_SIZE:
            break
    return records, total


def record_image(store: Store, source_id: str, shard_id: str, record_id: str, quarantined: bool = False):
    """(PNG bytes, ROIs) of one record."""
    import pyarrow.compute as pc

    manifest = read_manifest(store, source_id)
    keys = {shard: key for shard, key, _ in _shard_keys(manifest, quarantined)}
    if shard_id not in keys:
        raise NotFound(f"source {source_id} has no {'quarantine ' if quarantined else ''}shard {shard_id}")
    table = _read_table(store, keys[shard_id], ["id", "image", "rois"])
    rows = table.filter(pc.equal(table.column("id"), record_id)).to_pylist()
    if not rows:
        raise NotFound(f"shard {shard_id} of {source_id} has no record {record_id}")
    return rows[0]["image"]["bytes"], rows[0]["rois"] or []
