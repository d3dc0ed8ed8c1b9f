"""Memory benchmark: a source ten times larger must not need much more memory (shards stream).

Run from the repository root:  .venv/bin/python bench/memory.py

Writes the dermoscopy sample source at camera size (1024 x 768 RGB JPEG) twice, SMALL and 10 x SMALL
images, and runs `medtrinity run` on each in a fresh process with the in-process runner, the worst
case for the driver: it holds whatever a shard holds. The child reports its peak resident memory
(ru_maxrss). Images keep their size (MEDTRINITY_IMAGE_SIZE=0), so a record holds ~2 MB of PNG: a
pipeline that held a whole source would need about 1 GB more for the large run; streaming shard by
shard keeps it near the small run's.

The last line is
    BENCH memory small_peak_mb=<MB> large_peak_mb=<MB> ratio=<large/small> target=1.5 PASS|MISS
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = 32  # images: one shard
SHARD_SIZE = 32
TARGET = 1.5
SIZE = (1024, 768)

CHILD = """
import json, resource, sys
from medtrinity_tasks.run.local import run_source
result = run_source("synthetic_dermoscopy", progress=lambda line: None)
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mb": peak_kb / 1024, "counts": result["counts"]}))
"""


def measure(images: int, tmp: Path) -> dict:
    from medtrinity_tasks.sources.samples.planar import write_dermoscopy

    samples, output = tmp / f"samples-{images}", tmp / f"output-{images}"
    write_dermoscopy(samples, cases=images, size=SIZE)
    env = dict(
        os.environ,
        MEDTRINITY_SAMPLES_DIR=str(samples),
        MEDTRINITY_OUTPUT=str(output),
        MEDTRINITY_RUNNER="inprocess",
        MEDTRINITY_SHARD_SIZE=str(SHARD_SIZE),
        MEDTRINITY_IMAGE_SIZE="0",  # keep camera size: a whole-source load would show as ~1 GB more
        GX_ANALYTICS_ENABLED="false",
        MEDTRINITY_KNOWLEDGE_TOP_K="0",  # retrieval holds a model and a store: constant, measured on its own
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["seconds"] = time.perf_counter() - started
    if report["counts"]["records"] != images:
        raise SystemExit(f"FAIL: {images} images gave {report['counts']['records']} records")
    return report


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="medtrinity-bench-memory-"))
    try:
        small = measure(SMALL, tmp)
        print(f"small: {SMALL} images, peak {small['peak_mb']:.0f} MB, {small['seconds']:.1f}s", flush=True)
        large = measure(10 * SMALL, tmp)
        print(f"large: {10 * SMALL} images, peak {large['peak_mb']:.0f} MB, {large['seconds']:.1f}s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = large["peak_mb"] / small["peak_mb"]
    verdict = "PASS" if ratio <= TARGET else "MISS"
    print(
        f"BENCH memory small_peak_mb={small['peak_mb']:.1f} large_peak_mb={large['peak_mb']:.1f} "
        f"ratio={ratio:.3f} target={TARGET} {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
