"""Ingest benchmark: slices per second through the pipeline against the bare per-slice work.

Run from the repository root:  .venv/bin/python bench/ingest.py   (or `make bench`)

* Input: ``write_ct_abdomen(tmp, cases=CASES)`` in a temporary directory (removed at the end).
* Bare work: for every volume, ``read_nifti`` (image and label) -> ``choose_slices`` ->
  ``display_view`` -> ``window_to_uint8`` -> ``encode_png``, in one plain Python loop in this
  process (one core).
* Pipeline: the real thing, ``plan_shards`` -> ``process_shard`` for every shard (in order, as
  ``run_source`` does) -> ``gate_source`` -> ``publish_source``, on the default Ray runner.
  Ray is started before anything is timed, and an untimed warm-up run over one shard (into its
  own output directory) starts Ray's worker processes and builds the Great Expectations suite,
  so the ratio measures the pipeline as it runs on a warm cluster, not Ray's start-up.
* Each side is measured REPEATS times, alternating bare / pipeline in this one process, and the
  best (fastest) time of each is used: the best time is the least disturbed by whatever else the
  machine is doing, and both sides get the same treatment.
* The pipeline's slice count (records + quarantined in the published manifest) must equal the
  bare loop's, else the benchmark fails.

The last line on stdout is
    BENCH ingest slices_per_s=<pipeline> bare_slices_per_s=<bare> ratio=<pipeline/bare> target=0.7 PASS|MISS
Note that this machine may have few cores: the pipeline runs its stages in parallel on Ray, the
bare loop runs on one core.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

CASES = 32  # volumes: two shards of the default size 16
REPEATS = 3  # timed runs of each side, alternating; the best of each is reported
TARGET = 0.7
SOURCE_ID = "synthetic_ct_abdomen"

# Settings are read from the environment: point them at the temporary input and output before
# importing anything that reads them. MEDTRINITY_RUNNER is unset so the default (Ray) runner runs.
TMP = Path(tempfile.mkdtemp(prefix="medtrinity-bench-"))
SAMPLES = TMP / "samples"
OUTPUT = TMP / "output"
WARMUP_OUTPUT = TMP / "warmup-output"
os.environ["MEDTRINITY_SAMPLES_DIR"] = str(SAMPLES)
os.environ["MEDTRINITY_OUTPUT"] = str(OUTPUT)
os.environ.pop("MEDTRINITY_RUNNER", None)
# Keep Ray and Great Expectations quiet: no usage-stats banner, no analytics, no driver log echo.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")
_handler = logging.StreamHandler(sys.stderr)
# Some libraries (Great Expectations) set INFO on their own loggers: filter at the handler.
_handler.setLevel(logging.WARNING)
logging.basicConfig(level=logging.WARNING, handlers=[_handler])
# Ray's own loggers print through their own handlers: its start-up notices (token auth) and
# Ray Data's per-dataset warnings are not what this benchmark reports.
for _name in (
    "ray",
    "ray.data",
    "ray._private.authentication.authentication_token_setup",
):
    logging.getLogger(_name).setLevel(logging.ERROR)


from medtrinity_tasks.config import load_settings
from medtrinity_tasks.pipeline import (
    gate_source,
    plan_shards,
    process_shard,
    publish_source,
)
from medtrinity_tasks.preprocess.images import encode_png, window_to_uint8
from medtrinity_tasks.preprocess.slicing import choose_slices, display_view
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.readers import read_nifti
from medtrinity_tasks.sources.samples import write_ct_abdomen


def bare(
    root: Path,
    pairs: list[tuple[str, str]],
    lesion_values: list[int],
    context: int,
    window,
) -> tuple[int, float]:
    """The per-slice work alone, single process. Returns (slices, seconds)."""
    center, width = (window.center, window.width) if window else (None, None)
    started = time.perf_counter()
    slices = 0
    for image_rel, label_rel in pairs:
        image = read_nifti(root / image_rel)
        labels = read_nifti(root / label_rel, labels=True)
        for z in choose_slices(labels.data, lesion_values, image.data, context):
            pixels = window_to_uint8(display_view(image.data[:, :, z]), center, width)
            encode_png(pixels)
            slices += 1
    return slices, time.perf_counter() - started


def pipeline(output_uri: str, *, limit: int | None = None) -> tuple[int, float]:
    """plan -> process every shard -> gate -> publish, forced. Returns (slices, seconds)."""
    started = time.perf_counter()
    shards = plan_shards(SOURCE_ID, output_uri, limit=limit, force=True)
    summaries = [process_shard(shard) for shard in shards]
    verdict = gate_source(SOURCE_ID, summaries, output_uri)
    published = publish_source(SOURCE_ID, summaries, output_uri, verdict)
    seconds = time.perf_counter() - started
    counts = published["counts"]
    return counts["records"] + counts["quarantined"], seconds


def main() -> int:
    import ray

    from medtrinity_tasks.stages.ray_runner import ensure_ray

    settings = load_settings()
    source = get_source(SOURCE_ID)
    t0 = time.perf_counter()
    root = write_ct_abdomen(SAMPLES, cases=CASES)
    print(
        f"input: {CASES} phantom volumes in {root} ({time.perf_counter() - t0:.1f}s to write)",
        flush=True,
    )

    entries = json.loads((root / "dataset.json").read_text())["training"]
    pairs = [(e["image"].removeprefix("./"), e["label"].removeprefix("./")) for e in entries]
    lesion_values = source.roi_values()
    context = source.slicing.context_slices if source.slicing.context_slices is not None else settings.context_slices

    # Start Ray before timing, and warm its workers (and the GE suite in this process) with one
    # untimed shard into a separate output: the ratio is for the pipeline on a warm cluster.
    t0 = time.perf_counter()
    ensure_ray(settings)
    ray_start = time.perf_counter() - t0
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # ensure_ray sets WARNING
    warm_slices, warm_seconds = pipeline(str(WARMUP_OUTPUT), limit=settings.shard_size)
    print(
        f"ray: started in {ray_start:.2f}s ({int(ray.cluster_resources().get('CPU', 0))} CPUs); "
        f"warm-up: {warm_slices} slices in {warm_seconds:.2f}s (untimed)",
        flush=True,
    )

    bare_times, pipe_times = [], []
    bare_slices = pipe_slices = None
    for attempt in range(1, REPEATS + 1):
        bare_slices, seconds = bare(root, pairs, lesion_values, context, source.display_window())
        bare_times.append(seconds)
        print(
            f"  run {attempt}: bare     {bare_slices} slices in {seconds:.3f}s = {bare_slices / seconds:.2f} slices/s",
            flush=True,
        )
        pipe_slices, seconds = pipeline(str(OUTPUT))
        pipe_times.append(seconds)
        print(
            f"  run {attempt}: pipeline {pipe_slices} slices in {seconds:.3f}s = {pipe_slices / seconds:.2f} slices/s",
            flush=True,
        )
        if pipe_slices != bare_slices:
            raise SystemExit(
                f"FAIL: the pipeline produced {pipe_slices} slices (records + quarantined) but the bare loop "
                f"cut {bare_slices}: they do not do the same work"
            )

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"load average during the runs (1/5/15 min): {load} on {os.cpu_count()} CPUs",
        flush=True,
    )
    bare_best, pipe_best = min(bare_times), min(pipe_times)
    bare_rate, pipe_rate = bare_slices / bare_best, pipe_slices / pipe_best
    ratio = pipe_rate / bare_rate
    print(
        f"bare:     {bare_slices} slices, best of {REPEATS} {bare_best:.3f}s -> {bare_rate:.2f} slices/s",
        flush=True,
    )
    print(
        f"pipeline: {pipe_slices} slices, best of {REPEATS} {pipe_best:.3f}s -> {pipe_rate:.2f} slices/s",
        flush=True,
    )

    # Shut Ray down before the final line so that nothing it logs can follow it.
    ray.shutdown()
    sys.stderr.flush()
    verdict = "PASS" if ratio >= TARGET else "MISS"
    print(
        f"BENCH ingest slices_per_s={pipe_rate:.3f} bare_slices_per_s={bare_rate:.3f} "
        f"ratio={ratio:.3f} target={TARGET} {verdict}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(code)
