"""The dataset as a whole: a manifest over every published source and a dataset card.

Rebuilt by the ``medtrinity_dataset`` DAG whenever a source publishes. It reads the source manifests
and only the ``modality`` and ``organ`` columns of the shards, so it stays cheap as sources grow.
The card follows the Hugging Face dataset card conventions (YAML front matter with licence, tags
and ``configs`` pointing at the Parquet shards, then prose).
"""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime

import yaml

from medtrinity_tasks import PIPELINE_VERSION
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.storage import open_store

MANIFEST_KEY = "dataset/manifest.json"
CARD_KEY = "README.md"  # at the output root, where the card's data_files paths start


def build_dataset(output_uri: str | None = None) -> dict:
    """Write ``dataset/manifest.json`` and the card ``README.md``; return the manifest."""
    import pyarrow.parquet as pq

    settings = load_settings()
    store = open_store(output_uri or settings.output_uri, settings)
    sources, modalities, organs = [], Counter(), Counter()
    for key in store.list("sources/"):
        if not key.endswith("/manifest.json"):
            continue
        manifest = store.read_json(key)
        if not manifest.get("published", True):  # its last run failed the gate: its shards are not the dataset's
            continue
        counts, quality = manifest["counts"], manifest.get("quality") or {}
        sources.append(
            {
                "source_id": manifest["source_id"],
                "name": manifest["source_name"],
                "licence": manifest["licence"],
                "records": counts["records"],
                "quarantined": counts["quarantined"],
                "inputs": counts["inputs"],
                "rejected": counts["rejected"],
                "pass_rate": quality.get("pass_rate"),
                "pipeline_version": manifest["pipeline_version"],
                "published_at": manifest["published_at"],
            }
        )
        for shard in manifest["shards"]:
            if shard["records"]:
                key_in_store = shard["uri"].removeprefix(store.uri.rstrip("/") + "/")
                table = pq.read_table(io.BytesIO(store.read_bytes(key_in_store)), columns=["modality", "organ"])
                modalities.update(table.column("modality").to_pylist())
                organs.update(table.column("organ").to_pylist())
    sources.sort(key=lambda s: s["source_id"])
    dataset = {
        "pipeline_version": PIPELINE_VERSION,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "records": sum(s["records"] for s in sources),
        "sources": sources,
        "records_by_modality": dict(modalities.most_common()),
        "records_by_organ": dict(organs.most_common()),
    }
    store.write_json(MANIFEST_KEY, dataset)
    store.write_bytes(CARD_KEY, dataset_card(dataset).encode())
    return dataset


def dataset_card(dataset: dict) -> str:
    """A Hugging Face dataset card: front matter for the Hub, then what is in it and under which licences."""
    records = dataset["records"]
    size = next(
        (name for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                                  (1_000_000, "100K<n<1M")) if records < limit),
        "n>1M",
    )  # fmt: skip
    front = {
        "license": "other",
        "license_name": "per-source",
        "pretty_name": "MedTrinity-style multigranular medical image-text triplets",
        "tags": ["medical", "image-text", "regions-of-interest"],
        "task_categories": ["image-to-text"],
        "size_categories": [size],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "sources/*/shards/*.parquet"}]}
        ],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        "# MedTrinity-style multigranular medical image-text triplets",
        "",
        f"{records} records (2D image, regions of interest, multigranular description) from "
        f"{len(dataset['sources'])} source(s), built by pipeline {dataset['pipeline_version']} on "
        f"{dataset['built_at']}. Each record keeps its source's licence in `provenance.licence`: the "
        "dataset as a whole is only as open as its most restrictive source.",
        "",
        "## Sources",
        "",
        "| source | licence | records | quarantined | inputs rejected | pass rate |",
        "|---|---|---|---|---|---|",
    ]
    for source in dataset["sources"]:
        rate = "" if source["pass_rate"] is None else f"{source['pass_rate']:.2f}"
        lines.append(
            f"| {source['name']} (`{source['source_id']}`) | {source['licence']} | {source['records']} | "
            f"{source['quarantined']} | {source['rejected']} of {source['inputs']} | {rate} |"
        )
    lines += ["", "## Records by modality", ""]
    lines += [f"- {name}: {count}" for name, count in dataset["records_by_modality"].items()]
    lines += ["", "## Records by organ", ""]
    lines += [f"- {name}: {count}" for name, count in dataset["records_by_organ"].items()]
    return "\n".join(lines) + "\n"
