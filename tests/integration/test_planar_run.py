"""2D sources: images with mask images (ISIC / Kvasir-SEG style), read, accounted for and described."""

import json

import pyarrow.parquet as pq

from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.samples.planar import BAD_DERMOSCOPY
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore

SOURCE = "synthetic_dermoscopy"


def test_dermoscopy_source_end_to_end(samples_dir, settings_env, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    result = run_source(SOURCE, progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 8 + len(BAD_DERMOSCOPY) == counts["used"] + counts["rejected"]
    assert counts["records"] == 8 and counts["produced"] == counts["records"] + counts["quarantined"]

    manifest = LocalStore(settings_env["MEDTRINITY_OUTPUT"]).read_json(manifest_key(SOURCE))
    reasons = {r["input"]: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == set(BAD_DERMOSCOPY)
    for path, expected in BAD_DERMOSCOPY.items():
        assert reasons[path].startswith(expected), reasons[path]

    truth = json.loads((samples_dir / SOURCE / "ground_truth.json").read_text())
    records = pq.read_table(manifest["shards"][0]["uri"]).to_pylist()
    assert {r["source_relpath"] for r in records} == set(truth)
    for record in records:
        (roi,) = record["rois"]
        assert roi["bbox_xyxy"] == truth[record["source_relpath"]]["bbox_xyxy"]
        x0, y0, x1, y1 = roi["bbox_xyxy"]
        assert roi["location"] == describe_location(
            ((x0 + x1) / 2, (y0 + y1) / 2), record["width"], record["height"], None, "skin"
        )
        assert "darker than the surrounding tissue" in roi["texture"]
        assert record["axis"] == "image" and record["spacing_mm"] is None and record["patient_orientation"] is None
        assert decode_png(record["image"]["bytes"]).shape == (240, 320, 3)  # colour kept
        assert "pixels lies in the" in record["description"]["roi_location"]
        assert record["coarse_caption"].startswith("Dermoscopy image of the skin; annotated findings")
