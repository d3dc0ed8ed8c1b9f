"""ROIs from a source's own label maps: connected components of each lesion label, described."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.descriptors import RING_PIXELS, describe_texture, surrounding_ring
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Stage

MIN_ROI_PIXELS = 3
"""Components smaller than this are partial-volume specks at a lesion's edge, not regions."""


def label_slice(row: dict) -> np.ndarray:
    return np.frombuffer(row["label_slice"], dtype="<u2").reshape(row["height"], row["width"])


class AnnotationRois(Stage):
    """Adds ``rois`` (one per connected lesion component), ``anatomy``, ``organ`` and ``diseases``."""

    name = "annotation_rois"
    version = "1"

    def __init__(self, source: SourceEntry):
        self.source = source

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [self.describe(row) for row in rows]

    def describe(self, row: dict) -> dict:
        labels = label_slice(row)
        pixels = decode_png(row["image"]["bytes"])
        organ_values = {v: label.name for v, label in self.source.labels.items() if label.kind == "organ"}
        present = set(np.flatnonzero(np.bincount(labels.ravel())).tolist()) - {0}
        anatomy = sorted({self.source.labels[v].organ or self.source.labels[v].name for v in present})
        rois = []
        for value in sorted(present):
            label = self.source.labels[value]
            if label.kind != "lesion":
                continue
            components, count = ndimage.label(labels == value)
            for index in range(1, count + 1):
                mask = components == index
                if mask.sum() >= MIN_ROI_PIXELS:
                    rois.append(self.roi(row, label, mask, labels, pixels, organ_values))
        rois.sort(key=lambda roi: -roi["area_fraction"])
        organ = next((roi["organ"] for roi in rois), self.source.body_region)
        return dict(
            row,
            rois=[{k: v for k, v in roi.items() if k != "organ"} for roi in rois],
            anatomy=anatomy,
            organ=organ,
            diseases=sorted({self.disease_of(roi["label"]) for roi in rois}),
        )

    def disease_of(self, label_name: str) -> str:
        return next(label.disease for label in self.source.labels.values() if label.name == label_name)

    def roi(self, row: dict, label, mask: np.ndarray, labels: np.ndarray, pixels: np.ndarray, organ_values) -> dict:
        ys, xs = np.nonzero(mask)
        # the ring around the region lies within RING_PIXELS of its box: work on that window only
        window = np.s_[
            max(ys.min() - RING_PIXELS, 0) : ys.max() + RING_PIXELS + 1,
            max(xs.min() - RING_PIXELS, 0) : xs.max() + RING_PIXELS + 1,
        ]
        ring = surrounding_ring(mask[window])
        around = [organ_values[v] for v in labels[window][ring].tolist() if v in organ_values]
        organ = max(set(around), key=around.count) if around else label.organ
        centroid = (float(xs.mean()), float(ys.mean()))
        return {
            "label": label.name,
            "bbox_xyxy": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
            "mask_rle": rle.encode(mask),
            "area_fraction": float(mask.sum()) / mask.size,
            "centroid_xy": list(centroid),
            "location": describe_location(
                centroid, row["width"], row["height"], row.get("patient_orientation"), self.source.body_region, organ
            ),
            "texture": describe_texture(pixels[window], mask[window], ring, self.source.modality, self.source.colour),
            "origin": "annotation",
            "organ": organ,
        }
