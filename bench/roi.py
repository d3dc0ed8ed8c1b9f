"""ROI expert benchmark: quality of the sample expert's regions, and what the actor pool costs.

Run from the repository root:  .venv/bin/python bench/roi.py

Quality: the shipped sample expert (a MONAI bundle) on phantom cases it never saw (8-11), against
their annotations: Dice and IoU per label, pooled over all pixels of all slices.

Throughput, on the same images (those held-out records, as if they had come without annotations):
- bare: the bundle's forward pass (PNG decode, batches of MEDTRINITY_EXPERT_BATCH_SIZE), one thread;
- the ExpertRois stage on a Ray actor pool of one and of two actors (one CPU each: Ray gives each
  actor one thread), which also describes every region it finds (location, size, shape, margin,
  HU contrast).
The ratios are the stage's images per second over the bare rate; the pool's overhead (and the
region words) must keep one actor at 0.8 of the bare rate or better.

The last line is
    BENCH roi dice=<min over labels> iou=... ratio_1=<1 actor / bare> ratio_2=<2 actors / bare>
          target_dice=0.8 target_ratio=0.8 PASS|MISS
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

TARGET_DICE = 0.8
TARGET_RATIO = 0.8
REPEAT = 3  # the held-out records, three times over: enough images for a steady pool


def main() -> None:
    import torch

    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.preprocess.images import decode_png
    from medtrinity_tasks.roi.bundle import MonaiBundle
    from medtrinity_tasks.roi.experts import ExpertRois
    from medtrinity_tasks.roi.registry import expert_for
    from medtrinity_tasks.roi.training import CHANNELS, SAMPLE_EXPERT, sample_slices
    from medtrinity_tasks.sources.catalog import get_source
    from medtrinity_tasks.stages.ray_runner import ensure_ray, run_ray

    settings = replace(load_settings(), ray_num_cpus=2)
    images, labels, records = sample_slices(cases=4, first_case=8, seed=11)
    model = MonaiBundle(settings.models_dir / SAMPLE_EXPERT)
    batch = settings.expert_batch_size
    predicted = np.concatenate([model.predict(images[i : i + batch]) for i in range(0, len(images), batch)])
    scores = {}
    for value, name in CHANNELS.items():
        if value:
            p, t = predicted == value, labels == value
            inter = (p & t).sum()
            scores[name] = (2 * inter / (p.sum() + t.sum()), inter / (p | t).sum())
            print(f"{name}: dice {scores[name][0]:.3f}, iou {scores[name][1]:.3f} ({t.sum()} pixels annotated)")

    rows = [dict(r, label_relpath=None, rois=[], diseases=[], anatomy=[]) for r in records] * REPEAT
    rows = [dict(r, id=f"{r['id']}-{i}") for i, r in enumerate(rows)]
    torch.set_num_threads(1)
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        grey = np.stack([decode_png(r["image"]["bytes"]) for r in rows[i : i + batch]])[:, None]
        model.predict(grey.astype(np.float32) / 255.0)
    bare = len(rows) / (time.perf_counter() - started)

    ensure_ray(settings)
    source = get_source("synthetic_ct_abdomen", settings)
    rates = {}
    for actors in (1, 2):
        stage_settings = replace(settings, expert_actors=actors)
        stage = ExpertRois(source, expert_for(source, stage_settings), stage_settings)
        started = time.perf_counter()
        out = run_ray([stage], rows, stage_settings)
        rates[actors] = len(rows) / (time.perf_counter() - started)
        assert len(out) == len(rows) and not any(r.get("quarantine_reasons") for r in out)
    print(f"{len(rows)} images: bare {bare:.1f}/s, stage with 1 actor {rates[1]:.1f}/s, 2 actors {rates[2]:.1f}/s")

    dice = min(d for d, _ in scores.values())
    iou = min(i for _, i in scores.values())
    ratio_1, ratio_2 = rates[1] / bare, rates[2] / bare
    ok = dice >= TARGET_DICE and ratio_1 >= TARGET_RATIO
    print(
        f"BENCH roi dice={dice:.3f} iou={iou:.3f} bare_images_per_s={bare:.1f} ratio_1={ratio_1:.3f} "
        f"ratio_2={ratio_2:.3f} target_dice={TARGET_DICE} target_ratio={TARGET_RATIO} {'PASS' if ok else 'MISS'}"
    )


if __name__ == "__main__":
    main()
