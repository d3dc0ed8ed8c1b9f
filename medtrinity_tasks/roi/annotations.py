"""ROIs from a source's own label maps: connected components of each lesion label, described."""

from __future__ import annotations

import numpy as np

from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.roi.descriptors import ring_window, surrounding_ring
from medtrinity_tasks.roi.regions import body_frame, connected_regions, describe_region, image_modality, organ_context
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Stage

MIN_ROI_PIXELS = 3
"""Components smaller than this are partial-volume specks at a lesion's edge, not regions."""


def label_slice(row: dict) -> np.ndarray:
    return np.frombuffer(row["label_slice"], dtype="<u2").reshape(row["height"], row["width"])


class AnnotationRois(Stage):
    """Adds ``rois`` (one per connected component of a region-of-interest label: lesions, or organs
    in organ-only sources), ``anatomy``, ``organ`` and ``diseases``."""

    name = "annotation_rois"
    version = "1"
    reads = (
        "image", "modality", "body_region", "width", "height", "label_slice", "annotation_boxes", "image_labels",
        "patient_orientation", "spacing_mm",
    )  # fmt: skip
    writes = ("rois", "anatomy", "organ", "diseases", "label_slice")

    def __init__(self, source: SourceEntry):
        self.source = source
        self.roi_values = set(source.roi_values())

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [self.describe(row) for row in rows]

    def describe(self, row: dict) -> dict:
        labels = label_slice(row)
        present = set(np.flatnonzero(np.bincount(labels.ravel())).tolist()) - {0}
        anatomy = sorted({self.source.labels[v].organ or self.source.labels[v].name for v in present})
        targets = sorted(present & self.roi_values)
        boxes = row.get("annotation_boxes") or []
        rois = self.regions(row, labels, targets, boxes) if targets or boxes else []  # no region: no pixel read
        rois.sort(key=lambda roi: -roi["area_fraction"])
        organ = next((roi["organ"] for roi in rois), image_modality(self.source, row)[1])
        named = [roi["label"] for roi in rois] + (row.get("image_labels") or [])
        return dict(
            row,
            rois=[{k: v for k, v in roi.items() if k != "organ"} for roi in rois],
            anatomy=anatomy,
            organ=organ,
            diseases=sorted({d for d in map(self.disease_of, named) if d}),
            label_slice=None,  # now ROIs: no later stage needs the label map's 2 bytes per pixel
        )

    def regions(self, row: dict, labels: np.ndarray, targets: list[int], boxes: list[dict]) -> list[dict]:
        """The described ROIs of the label values ``targets`` (one per connected component) and of the boxes."""
        pixels = decode_png(row["image"]["bytes"])
        organ_values = {v: label.name for v, label in self.source.labels.items() if label.kind == "organ"}
        organs = organ_context(self.source, row, pixels)
        frame = body_frame(self.source, row, pixels)
        rois = []
        for value in targets:
            label = self.source.labels[value]
            for mask in connected_regions(labels == value, MIN_ROI_PIXELS):
                rois.append(self.roi(row, label, mask, labels, pixels, organ_values, organs, frame))
        for box in boxes:
            label = self.source.label_named(box["label"])
            rois.append(self.box_roi(row, label, box["bbox_xyxy"], pixels, organs, frame))
        return rois

    def disease_of(self, label_name: str) -> str | None:
        return self.source.label_named(label_name).disease

    def box_roi(self, row: dict, label, box: list[float], pixels: np.ndarray, organs, frame) -> dict:
        """A boxed finding: its mask is the box (clipped to the image), its place the box's centre.
        A box outside the image keeps its coordinates, so the gate quarantines it with the reason."""
        x0, y0, x1, y1 = box
        mask = np.zeros(pixels.shape[:2], dtype=bool)
        mask[max(int(y0), 0) : max(int(np.ceil(y1)), 0), max(int(x0), 0) : max(int(np.ceil(x1)), 0)] = True
        roi = describe_region(self.source, row, pixels, mask, label.name, label.organ, "annotation", organs, box, frame)
        return dict(roi, organ=label.organ or image_modality(self.source, row)[1])

    def roi(self, row: dict, label, mask, labels: np.ndarray, pixels: np.ndarray, organ_values, organs, frame):
        """A labelled component; a lesion's organ is the organ label that surrounds it most."""
        window = ring_window(*np.nonzero(mask))
        ring = surrounding_ring(mask[window])
        around = [organ_values[v] for v in labels[window][ring].tolist() if v in organ_values]
        if label.kind == "organ":
            organ = label.name
        else:
            organ = max(set(around), key=around.count) if around else label.organ
        return describe_region(self.source, row, pixels, mask, label.name, organ, "annotation", organs, frame=frame)
