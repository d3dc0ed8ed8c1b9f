"""A bomb among good images ends as a reject with its numbers, and the run's accounting balances."""

from __future__ import annotations

import json

import yaml

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.samples.planar import write_pathology_tiles
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore
from tests.support.bombs import png_of_zeros


def test_a_bomb_among_good_images_ends_as_a_reject_and_the_accounting_balances(knowledge_dir, tmp_path, monkeypatch):
    root = write_pathology_tiles(tmp_path / "data", cases=2)
    png_of_zeros(root / "images" / "TUM" / "bomb.png", 30000, 30000)
    shipped = get_source("synthetic_pathology_tiles", load_settings({})).model_dump()
    (catalog := tmp_path / "catalog").mkdir()
    entry = dict(shipped, id="limits_pathology_tiles", location=str(root))
    (catalog / "limits_pathology_tiles.yaml").write_text(yaml.safe_dump(entry))
    for key, value in {
        "MEDTRINITY_CATALOG_DIRS": str(catalog),
        "MEDTRINITY_DATA_DIR": str(tmp_path / "data"),
        "MEDTRINITY_KNOWLEDGE_DIR": str(knowledge_dir),
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_RUNNER": "inprocess",
    }.items():
        monkeypatch.setenv(key, value)

    result = run_source("limits_pathology_tiles", progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 3 * 2 + 1 == counts["used"] + counts["rejected"]
    assert counts["rejected"] == 1 and counts["records"] == 6
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    store = LocalStore(str(tmp_path / "out"))
    manifest = store.read_json(manifest_key("limits_pathology_tiles"))
    assert manifest["rejected"] == [
        {
            "input": "images/TUM/bomb.png",
            "reason": "image too large: claims 30000 x 30000 pixels, more than the 100000000 allowed "
            "(MEDTRINITY_MAX_IMAGE_PIXELS)",
            "kind": "image too large",
        }
    ]
    assert manifest["rejected_by_reason"] == {"image too large": 1}
    (work,) = (tmp_path / "out").rglob("work/shard-*.json")
    assert [r["reason"] for r in json.loads(work.read_text())["rejected"]] == [manifest["rejected"][0]["reason"]]
