"""The stage that runs a ROI expert (chosen by ``roi.registry``). Source annotations take
precedence: an expert only looks at records whose input came without any annotation (no label map,
no boxes, no SEG or RTSTRUCT), and each ROI it adds names its origin and model version.

The stage runs as a Ray actor pool (``setup`` loads the bundle once per actor), with the GPUs per
actor, the pool size and the batch size from its ``ExpertConfig``. A batch that fails is quarantined with the
reason by the stage base class; an out-of-memory error first halves the batch, so only the images
that cannot fit on their own are quarantined.

The actor does the network's work only: it returns each predicted label's mask (RLE) with the
label and its origin. ``DescribeRois``, a CPU stage after it, splits the masks into connected regions
and puts them into words, so that a GPU actor never waits on CPU-bound work (on CPU, describing costs
about a quarter of the sample expert's forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import ExpertUnavailable
from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.reasons import Reason, quarantined
from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.bundle import BUNDLE_FILES, MONAI_REQUIRES
from medtrinity_tasks.roi.regions import body_frame, connected_regions, describe_region, image_modality, organ_context
from medtrinity_tasks.roi.registry import ExpertEntry, unannotated
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Resources, Stage

MIN_EXPERT_PIXELS = 10
"""Predicted components smaller than this are noise, not regions."""


def _is_out_of_memory(exc: Exception) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass(frozen=True)
class ExpertConfig:
    """How an expert runs: where its bundle is, GPUs per actor, images per forward pass, actors per shard."""

    bundle_root: Path
    gpus: float
    batch_size: int
    actors: int

    @classmethod
    def from_settings(cls, expert: ExpertEntry, settings: Settings) -> ExpertConfig:
        return cls(
            expert.bundle_path(settings), settings.expert_gpus, settings.expert_batch_size, settings.expert_actors
        )


class ExpertRois(Stage):
    """Adds the expert's ROIs (and their organs and diseases) to records without annotations."""

    name = "expert_rois"
    version = "1"
    reads = ("image", "modality", "body_region", "label_relpath", "annotation_boxes", "annotation_files")
    writes = ("rois",)
    requires = MONAI_REQUIRES

    def __init__(self, source: SourceEntry, expert: ExpertEntry, config: ExpertConfig):
        self.source, self.expert = source, expert
        self.bundle_root = config.bundle_root
        missing = [name for name in BUNDLE_FILES if not (self.bundle_root / name).is_file()]
        if missing:  # fail before any actor starts, naming the directory
            raise ExpertUnavailable(
                f"expert {expert.name}: no MONAI bundle at {self.bundle_root} ({', '.join(missing)} missing); "
                "put the bundle there or set MEDTRINITY_MODELS_DIR (the sample expert: "
                "`medtrinity experts train-sample`)"
            )
        self.resources = Resources(cpus=1.0, gpus=config.gpus)
        self.batch_size = config.batch_size
        self.max_actors = config.actors
        self.model = None

    def setup(self) -> None:
        from medtrinity_tasks.roi.bundle import MonaiBundle

        self.model = MonaiBundle(self.bundle_root, device="cuda" if self.resources.gpus else "cpu")
        self.origin = f"expert {self.model.name} {self.model.version}"

    def process_batch(self, rows: list[dict]) -> list[dict]:
        todo = [
            i
            for i, row in enumerate(rows)
            if unannotated(row) and self.expert.covers(*image_modality(self.source, row))
        ]
        pixels = [decode_png(rows[i]["image"]["bytes"]) for i in todo]
        out = list(rows)
        for i, label_map in zip(todo, self.predict(pixels), strict=True):
            out[i] = self.regions(rows[i], label_map) if label_map is not None else quarantined(
                rows[i], [Reason.of(f"{self.name} failed", "out of memory on a single image")]
            )  # fmt: skip
        return out

    def predict(self, pixels: list[np.ndarray]) -> list[np.ndarray | None]:
        """Label maps, one per image (None where even one image alone runs out of memory)."""
        if not pixels:
            return []
        try:
            grey = [p.mean(axis=2) if p.ndim == 3 else p for p in pixels]
            if len({g.shape for g in grey}) > 1:  # one forward pass per image size
                return [m for image in pixels for m in self.predict([image])]
            return list(self.model.predict(np.stack(grey)[:, None].astype(np.float32) / 255.0))
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            if len(pixels) == 1:
                return [None]
            half = len(pixels) // 2
            return self.predict(pixels[:half]) + self.predict(pixels[half:])

    def regions(self, row: dict, label_map: np.ndarray) -> dict:
        """``row`` with one undescribed ROI per label the expert predicts: the label's whole mask."""
        masks = {label.name: label_map == value for value, label in self.expert.labels.items()}
        rois = [
            {"label": name, "mask_rle": rle.encode(mask), "origin": self.origin}
            for name, mask in masks.items()
            if mask.any()
        ]
        return dict(row, rois=rois)


class DescribeRois(Stage):
    """Turns an expert's label masks into described regions, on CPU: each connected component of a
    label becomes a ROI described as ``regions.describe_region`` describes annotated ones (location,
    size, shape, margin, contrast), and the labels found give the record's organs and diseases.
    Records without undescribed masks pass as they are."""

    name = "describe_rois"
    version = "1"
    reads = (
        "image", "modality", "body_region", "rois", "patient_orientation", "spacing_mm", "organ", "anatomy", "diseases",
    )  # fmt: skip
    writes = ("rois", "organ", "anatomy", "diseases")

    def __init__(self, source: SourceEntry, expert: ExpertEntry):
        self.source, self.expert = source, expert

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [self.describe(row) if any(map(undescribed, row.get("rois") or [])) else row for row in rows]

    def describe(self, row: dict) -> dict:
        pixels = decode_png(row["image"]["bytes"])
        organs = organ_context(self.source, row, pixels)
        frame = body_frame(self.source, row, pixels)
        rois, diseases, anatomy = [], set(row.get("diseases") or []), set(row.get("anatomy") or [])
        for found in row["rois"]:  # all the expert's: it labels only images that came without annotations
            label = self.expert.label_named(found["label"])
            organ = label.organ or image_modality(self.source, row)[1]
            for mask in connected_regions(rle.decode(found["mask_rle"]), MIN_EXPERT_PIXELS):
                roi = describe_region(
                    self.source, row, pixels, mask, label.name, organ, found["origin"], organs, frame=frame
                )
                rois.append({k: v for k, v in roi.items() if k != "organ"})
                diseases.update([label.disease] if label.disease else [])
                anatomy.update([label.organ] if label.organ else [])
        rois.sort(key=lambda roi: -roi["area_fraction"])
        largest = next((self.expert.label_named(roi["label"]).organ for roi in rois), None)
        organ = largest or row.get("organ") or image_modality(self.source, row)[1]
        return dict(row, rois=rois, diseases=sorted(diseases), anatomy=sorted(anatomy), organ=organ)


def undescribed(roi: dict) -> bool:
    """A mask that carries no words yet: an expert's label, before ``DescribeRois``."""
    return roi.get("location") is None
