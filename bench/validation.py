"""Validation benchmark: what quality validation costs, per 10,000 records and as a fraction of the
pipeline's time for the same records with the template engine.

Run from the repository root:  .venv/bin/python bench/validation.py   (or `make bench`)

* Input: the five sample sources (``medtrinity samples``: CT NIfTI, CT DICOM with SEG, dermoscopy,
  chest radiographs with reports, pathology tiles), CASES cases each, and the demo knowledge base,
  written in a temporary directory (removed at the end), none of it timed.
* Pipeline: the real thing for every source, ``plan_shards`` -> ``process_shard`` per shard ->
  ``gate_source`` -> ``publish_source``, forced, on the default Ray runner (started beforehand, and
  warmed by an untimed run). Its time includes validation.
* Validation: for the same records (every record the run produced, read back from its shards and
  quarantine files, grouped by shard as the pipeline groups them), what ``process_shard`` and
  ``gate_source`` do to validate: reference scores against the human text (the chest radiographs'
  reports; the sentence model loaded beforehand, as each worker process loads it once), the Great
  Expectations suite with its consistency columns, the shard's Data Docs page, the run's report.
* Each side runs REPEATS times, alternating; the best time of each is used. One run each keeps the
  benchmark near three minutes on two cores; the fraction measured 0.057 with two (384 records).
* Both sides have per-shard fixed costs that records amortise: the pipeline's Ray actor pools start
  and load their models for each shard, and the suite's expectations cost about the same whatever
  a shard's size. Measured between 8 and 16 cases per source (200 and 384 records), the pipeline's
  marginal cost was about 160 ms per record and validation's about 14 ms.

The last line is
    BENCH validation records=... validation_s_per_10k=... pipeline_s_per_10k=... fraction=...
        target=0.1 PASS|MISS
PASS when validation takes under a tenth of the pipeline's time for the same records.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

CASES = 16
REPEATS = 1
TARGET = 0.1

TMP = Path(tempfile.mkdtemp(prefix="medtrinity-bench-validation-"))
os.environ["MEDTRINITY_SAMPLES_DIR"] = str(TMP / "samples")
os.environ["MEDTRINITY_OUTPUT"] = str(TMP / "output")
os.environ["MEDTRINITY_KNOWLEDGE_DIR"] = str(TMP / "knowledge")
os.environ.setdefault("MEDTRINITY_DEID_SALT", "bench")
os.environ.pop("MEDTRINITY_RUNNER", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")
_handler = logging.StreamHandler(sys.stderr)
_handler.setLevel(logging.WARNING)  # some libraries set INFO on their own loggers: filter at the handler
logging.basicConfig(level=logging.WARNING, handlers=[_handler])
for _name in ("ray", "ray.data", "ray._private.authentication.authentication_token_setup"):
    logging.getLogger(_name).setLevel(logging.ERROR)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from medtrinity_tasks.config import load_settings  # noqa: E402
from medtrinity_tasks.knowledge.index import index_corpus  # noqa: E402
from medtrinity_tasks.run.plan import plan_shards  # noqa: E402
from medtrinity_tasks.run.publish import gate_source, publish_source  # noqa: E402
from medtrinity_tasks.run.shard import process_shard  # noqa: E402
from medtrinity_tasks.sources.samples import SAMPLE_SOURCES  # noqa: E402
from medtrinity_tasks.stages.ray_runner import ensure_ray  # noqa: E402
from medtrinity_tasks.validation.consistency import catalog_vocabulary  # noqa: E402
from medtrinity_tasks.validation.gate import validate_records  # noqa: E402
from medtrinity_tasks.validation.reference import (  # noqa: E402
    reference_summary,
    reference_totals,
    score_references,
)
from medtrinity_tasks.validation.report import data_docs_html, summary_html  # noqa: E402


def run_pipeline(output: str, sources: tuple[str, ...] | None = None) -> float:
    started = time.perf_counter()
    for source_id in sources or sorted(SAMPLE_SOURCES):
        shards = plan_shards(source_id, output, force=True)
        summaries = [process_shard(shard) for shard in shards]
        publish_source(source_id, summaries, output, gate_source(source_id, summaries, output))
    return time.perf_counter() - started


def produced_records(output: Path) -> dict[tuple[str, str], list[dict]]:
    """Every record the run produced (published and quarantined), by (source, shard)."""
    shards = defaultdict(list)
    for folder in ("shards", "quarantine"):
        for path in sorted(output.glob(f"sources/*/{folder}/*.parquet")):
            shards[path.parts[-3], path.stem] += pq.read_table(path).to_pylist()
    return shards


def validate(shards: dict[tuple[str, str], list[dict]], settings, encoder) -> float:
    started = time.perf_counter()
    vocab = catalog_vocabulary(settings)
    totals = defaultdict(list)
    for (source_id, _), rows in shards.items():
        scores = score_references(rows, vocab, encoder)
        for row, score in zip(rows, scores, strict=True):
            row["quality"] = dict(row.get("quality") or {}, reference=score)
        passed, quarantined, validation = validate_records(rows, vocab)
        data_docs_html(validation)
        totals[source_id].append(reference_totals(scores))
    for source_id, shard_totals in totals.items():
        summary_html({"source_id": source_id, "passed": True, "pass_rate": 1.0, "threshold": 0.9, "run_ids": [],
                      "written_at": "", "counts": {}, "quarantined_by_reason": {}, "rejected_by_reason": {},
                      "reference": reference_summary(shard_totals), "shards": []})  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    from medtrinity_tasks.knowledge.embeddings import DenseEncoder

    settings = load_settings()
    try:
        for writer in SAMPLE_SOURCES.values():
            writer(settings.samples_dir, cases=CASES)
        index_corpus(None, "demo", settings)
        encoder = DenseEncoder(settings.embedding_model)
        ensure_ray(settings)
        run_pipeline(str(TMP / "warmup"), ("synthetic_chest_xray",))  # untimed: Ray's workers, the suite

        pipeline_s = validation_s = float("inf")
        for attempt in range(1, REPEATS + 1):
            pipeline_s = min(pipeline_s, run_pipeline(settings.output_uri))
            shards = produced_records(Path(settings.output_uri))
            validation_s = min(validation_s, validate(shards, settings, encoder))
            print(f"run {attempt}: pipeline {pipeline_s:.2f} s, validation {validation_s:.2f} s")
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    records = sum(len(rows) for rows in shards.values())
    with_reference = sum(1 for rows in shards.values() for row in rows if row.get("reference_text"))
    fraction = validation_s / pipeline_s
    print(f"{records} records from {len(SAMPLE_SOURCES)} sources, {len(shards)} shards, {with_reference} with reports")
    print(
        f"BENCH validation records={records} validation_s_per_10k={validation_s / records * 1e4:.1f} "
        f"pipeline_s_per_10k={pipeline_s / records * 1e4:.1f} fraction={fraction:.3f} target={TARGET} "
        f"{'PASS' if fraction < TARGET else 'MISS'}"
    )


if __name__ == "__main__":
    main()
