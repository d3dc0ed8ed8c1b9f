"""Real DICOM benchmark: the real files the tests use, as one mixed source, through the whole pipeline.

Run from the repository root:  .venv/bin/python bench/real_dicom.py   (or `make bench`)

* Input: every DICOM file of pydicom's tests and of pydicom-data, staged as one mixed export by
  ``tests/support/real_data.stage_mixed_dicom`` (CT, MR, CR, US, NM, secondary captures, cine, every
  compressed syntax pydicom decodes, SEG, RTSTRUCT, RT plans and doses, reports, DICOMDIRs, broken
  files), in a temporary directory removed at the end.
* Image objects: the files pydicom alone finds to be images whose pixels it decodes, every frame at
  least MEDTRINITY_MIN_IMAGE_SIDE on each side and within MEDTRINITY_MAX_ASPECT_RATIO: what the pipeline
  should make records of. Smaller ones, non-images and broken files must end as rejects or quarantined
  records with their reasons.
* Pipeline: the real thing, ``plan_shards`` -> ``process_shard`` for every shard -> ``gate_source`` ->
  ``publish_source``, forced, on the default Ray runner, without retrieval (bench/retrieval.py measures
  it). Ray is started before anything is timed; the first run also starts Ray's workers and builds the
  Great Expectations suite, which the best of REPEATS leaves out.
* Bare work: for every image object, ``pydicom.dcmread`` + ``pixel_array`` (all frames), then for the
  frames the pipeline keeps (one, or the catalog's ``cine.frames`` evenly spaced) a min-max scale to 8
  bits, a shrink to MEDTRINITY_IMAGE_SIZE and a PIL PNG encode, in one plain loop in this process: no
  header scan, no grouping, no rejects, no windowing by modality, no description, no gate.
* Each side runs REPEATS times, alternating, and the best time of each is used.
* Accounting: each staged file's published name comes from ``medtrinity sources pseudonyms`` (the map a
  site that holds the salt gets); a file is accounted when its input is among the work records' used or
  rejected inputs, and an image object has records when its input has records in the shards.

The last line on stdout is
    BENCH real_dicom files=N accounted=N image_objects=N with_records=N degenerate=N ratio=<pipeline/bare>
        target=0.5 PASS|MISS
(one line); PASS when every file is accounted, no record is degenerate, at least 90 % of the image
objects have records, and the pipeline's records per second reach half the bare images per second.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from io import BytesIO
from pathlib import Path

REPEATS = 2  # timed runs of each side, alternating; the best of each is reported (the first warms Ray)
TARGET = 0.5
RECORDED_SHARE = 0.9

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support, run from the repository root
TMP = Path(tempfile.mkdtemp(prefix="medtrinity-bench-real-dicom-"))
OUTPUT = TMP / "out"
from tests.support import real_data

os.environ.update(real_data.environment(TMP, TMP / "no-knowledge-index"))
os.environ.pop("MEDTRINITY_RUNNER", None)  # the default (Ray) runner
os.environ["MEDTRINITY_KNOWLEDGE_TOP_K"] = "0"
(TMP / "no-experts.yaml").write_text("experts: []\n")
os.environ["MEDTRINITY_EXPERTS"] = str(TMP / "no-experts.yaml")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")
_handler = logging.StreamHandler(sys.stderr)
_handler.setLevel(logging.WARNING)
logging.basicConfig(level=logging.WARNING, handlers=[_handler])
for _name in ("ray", "ray.data", "ray._private.authentication.authentication_token_setup"):
    logging.getLogger(_name).setLevel(logging.ERROR)
import pydicom  # sets its logger's level on import: quieted after it

# pydicom logs each decoder that fails on the broken files (with its traceback): their rejects say why
logging.getLogger("pydicom").setLevel(logging.CRITICAL)

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.run.publish import GateFailed, gate_source, publish_source
from medtrinity_tasks.run.shard import process_shard

SOURCE = real_data.MIXED_DICOM_ENTRY["id"]
CINE_FRAMES = real_data.MIXED_DICOM_ENTRY["cine"]["frames"]


def kept_frames(count: int) -> list[int]:
    """The frames of an object the pipeline keeps: all of a short one, else CINE_FRAMES evenly spaced."""
    if count <= CINE_FRAMES:
        return list(range(count))
    return sorted({round(k * (count - 1) / (CINE_FRAMES - 1)) for k in range(CINE_FRAMES)})


def bare(objects: list[real_data.DicomFile], root: Path, image_size: int) -> int:
    """Decode each image object and encode the frames the pipeline keeps as PNG. Returns the images made."""
    import numpy as np
    from PIL import Image

    images = 0
    for item in objects:
        pixels = pydicom.dcmread(root / item.relpath).pixel_array
        frames = pixels if item.frames > 1 else pixels[np.newaxis]
        for index in kept_frames(len(frames)):
            frame = frames[index].astype(np.float32)
            low, high = float(frame.min()), float(frame.max())
            scaled = ((frame - low) * (255.0 / (high - low or 1.0))).astype(np.uint8)
            image = Image.fromarray(scaled)
            image.thumbnail((image_size, image_size))
            image.save(BytesIO(), format="PNG")
            images += 1
    return images


def pipeline(output: Path) -> tuple[int, float]:
    """plan -> process every shard -> gate -> publish, forced. Returns (records, seconds). A failed gate
    still counts: the manifest is written either way, and its records are what the run made."""
    started = time.perf_counter()
    shards = plan_shards(SOURCE, str(output), force=True)
    summaries = [process_shard(shard) for shard in shards]
    try:
        verdict = gate_source(SOURCE, summaries, str(output))
        published = publish_source(SOURCE, summaries, str(output), verdict)
        records = published["counts"]["records"]
    except GateFailed as failed:
        print(f"gate: {failed}", flush=True)
        records = sum(summary["records"] for summary in summaries)
    return records, time.perf_counter() - started


def accounting(files: list[real_data.DicomFile]) -> dict[str, int]:
    """Files accounted, image objects with records and degenerate records of the last run in OUTPUT."""
    settings = load_settings()
    names = real_data.published_names(SOURCE, dict(os.environ))
    outcome = real_data.published(OUTPUT, SOURCE)
    accounted = outcome.used() | set(outcome.rejected())
    by_input = outcome.records_by_input()
    images = [f for f in files if f.kind == real_data.IMAGE]
    degenerate = [
        r
        for r in outcome.records
        if min(r["width"], r["height"]) < settings.min_image_side
        or max(r["width"], r["height"]) > settings.max_aspect_ratio * min(r["width"], r["height"])
    ]
    return {
        "files": len(files),
        "accounted": sum(names.get(f.relpath) in accounted for f in files),
        "image_objects": len(images),
        "with_records": sum(names.get(f.relpath) in by_input for f in images),
        "degenerate": len(degenerate),
    }


def main() -> int:
    import ray

    from medtrinity_tasks.stages.ray_runner import ensure_ray

    settings = load_settings()
    t0 = time.perf_counter()
    root, files = real_data.stage_mixed_dicom(
        TMP / "data", TMP / "catalog", settings.min_image_side, settings.max_aspect_ratio
    )
    images = [f for f in files if f.kind == real_data.IMAGE]
    print(f"staged {len(files)} files, {len(images)} image objects, in {time.perf_counter() - t0:.1f}s", flush=True)
    t0 = time.perf_counter()
    ensure_ray(settings)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # ensure_ray sets WARNING
    print(f"ray: started in {time.perf_counter() - t0:.2f}s ({int(ray.cluster_resources().get('CPU', 0))} CPUs)")

    bare_times, pipe_times = [], []
    for attempt in range(1, REPEATS + 1):
        started = time.perf_counter()
        bare_images = bare(images, root, settings.image_size)
        bare_times.append(time.perf_counter() - started)
        records, seconds = pipeline(OUTPUT)
        pipe_times.append(seconds)
        print(
            f"  run {attempt}: bare {bare_images} images in {bare_times[-1]:.2f}s, "
            f"pipeline {records} records in {seconds:.2f}s",
            flush=True,
        )
    ray.shutdown()
    bare_rate, pipe_rate = bare_images / min(bare_times), records / min(pipe_times)
    counts = accounting(files)
    ratio = pipe_rate / bare_rate
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"bare {bare_rate:.2f} images/s, pipeline {pipe_rate:.2f} records/s (best of {REPEATS})", flush=True)
    print(f"load average during the runs (1/5/15 min): {load} on {os.cpu_count()} CPUs", flush=True)
    passed = (
        counts["accounted"] == counts["files"]
        and counts["degenerate"] == 0
        and counts["with_records"] >= RECORDED_SHARE * counts["image_objects"]
        and ratio >= TARGET
    )
    sys.stderr.flush()
    print(
        f"BENCH real_dicom {' '.join(f'{key}={value}' for key, value in counts.items())} ratio={ratio:.3f} "
        f"target={TARGET} {'PASS' if passed else 'MISS'}",
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
