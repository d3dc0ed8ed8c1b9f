"""De-identification end to end: DICOM files and folder names carry fake PHI; no output may."""

import json
import logging

import pyarrow.parquet as pq

from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.sources.samples.dicom import BAD_DICOM, FAKE_PHI

SOURCE = "synthetic_ct_dicom"


PHI = [*FAKE_PHI.values(), "Doe_Jane", "PHI-12345"]


def _text_of_parquet(path) -> str:
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row.pop("image", None)  # PNG pixels, not text
    return json.dumps(rows, default=str)


def test_no_phi_reaches_shards_manifests_logs_or_plans(samples_dir, settings_env, monkeypatch, caplog, capsys):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    caplog.set_level(logging.DEBUG)
    plan = plan_shards(SOURCE)
    result = run_source(SOURCE, progress=print)
    counts = result["counts"]
    assert counts["records"] > 0 and counts["inputs"] == counts["used"] + counts["rejected"]
    assert result["rejected_by_reason"] == BAD_DICOM  # non-image objects, broken files and broken series

    out = settings_env["MEDTRINITY_OUTPUT"]
    from pathlib import Path

    texts = {"plan": json.dumps(plan), "logs": caplog.text, "output": "".join(capsys.readouterr())}
    for path in Path(out).rglob("*"):
        if path.is_file():
            texts[str(path)] = _text_of_parquet(path) if path.suffix == ".parquet" else path.read_text(errors="replace")
    assert len(texts) > 5
    for where, text in texts.items():
        for secret in PHI:
            assert secret not in text, f"{secret!r} leaked into {where}"

    shard = next(Path(out).rglob("shards/*.parquet"))
    records = pq.read_table(shard).to_pylist()
    assert all(r["source_relpath"].startswith("series-") for r in records)
    tumours = [roi for r in records for roi in r["rois"] if roi["label"] == "liver tumour"]
    assert tumours and all(roi["location"].startswith("right") for roi in tumours)  # SEG on the right voxels
