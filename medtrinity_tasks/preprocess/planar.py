"""2D sources: each image (an image file, or a single DICOM image such as a radiograph) becomes one
record with its mask, boxes or class labels (no slicing; a patient orientation only where the
catalog entry states one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.preprocess.images import encode_png, fit_within, window_to_uint8
from medtrinity_tasks.records import record_id
from medtrinity_tasks.sources.catalog import SourceEntry, Window
from medtrinity_tasks.sources.readers import reader_for
from medtrinity_tasks.sources.readers.limits import InputLimits, listed
from medtrinity_tasks.stages.base import InputStage


def to_8bit(pixels: np.ndarray, colour: bool, window: Window | None = None) -> np.ndarray:
    """8-bit grey, or 8-bit RGB when the source keeps colour; deeper images go through the source's
    window, or its 1st-99th percentiles when it has none."""
    if pixels.dtype != np.uint8:
        grey = pixels if pixels.ndim == 2 else pixels.mean(axis=2)
        return window_to_uint8(grey, window.center, window.width) if window else window_to_uint8(grey)
    if pixels.ndim == 3 and not colour:
        return np.round(pixels @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)  # ITU-R 601 luma
    return pixels


NOT_ANNOTATED = (
    "image has no annotation and no expert covers its modality and region",
    "the source's entry sets roi: required",
)
"""Why an image without mask, boxes or class labels is rejected where the entry requires regions of interest."""


def planar_record(
    source: SourceEntry, row: dict, image: np.ndarray, mask: np.ndarray, image_size: int, **facts
) -> dict:
    """The record row of one 2D image (8-bit grey or RGB) with its mask, shrunk to ``image_size``: ``facts`` name
    its ``key`` (what its id is made of), ``frame``, ``modality``, ``body_region``, ``spacing_mm`` (between rows and
    columns, or None), ``patient_orientation`` and ``view``."""
    image, mask, scale = fit_within(image, mask, image_size)
    height, width = image.shape[:2]
    spacing = facts["spacing_mm"]
    stem = facts["key"].rsplit(".", 1)[0]  # the path: many sources reuse file names across folders
    suffix = f"_{facts['frame']:04d}" if facts["frame"] else ""
    return dict(
        row,
        id=record_id(source.id, facts["key"], "image", facts["frame"]),
        modality=facts["modality"],
        body_region=facts["body_region"],
        image={"bytes": encode_png(image), "path": f"{source.id}/{stem}{suffix}.png"},
        width=width,
        height=height,
        axis="image",
        slice_index=facts["frame"],
        spacing_mm=[spacing[0] / scale, spacing[1] / scale] if spacing else None,  # no spacing: sizes in pixels
        patient_orientation=facts["patient_orientation"],
        view=facts["view"],
        slice_side=None,
        label_slice=np.ascontiguousarray(mask, dtype="<u2").tobytes(),
        annotation_boxes=[
            dict(box, bbox_xyxy=[v * scale for v in box["bbox_xyxy"]]) for box in row.get("annotation_boxes") or []
        ],
    )


class PlanarImageLoader(InputStage):
    """Reads an image (and its mask, if it has one); emits one record row, or a reject with the reason."""

    name = "load_images"
    version = "2"
    batch_size = 16  # 2D images are small: several per task
    reads = ("source_relpath", "file_relpath", "label_relpath", "annotation_boxes", "image_labels")
    writes = (
        "id", "modality", "body_region", "image", "width", "height", "axis", "slice_index", "spacing_mm",
        "patient_orientation", "view", "slice_side", "label_slice", "annotation_boxes",
    )  # fmt: skip

    def __init__(
        self, source: SourceEntry, *, root: Path, image_size: int, limits: InputLimits, keep_unannotated: bool
    ):
        """As ``VolumeSlicer``'s parameters of the same names. ``keep_unannotated``: an image without mask, boxes
        or class labels is a record (an expert follows, or the entry's regions of interest are optional);
        otherwise it is rejected."""
        self.source = source
        self.root = root
        self.image_size = image_size
        self.limits = limits
        self.keep_unannotated = keep_unannotated
        self.reader = reader_for(source.format, source.layout)(source, self.root, self.limits)
        """Pixels as stored (2D image files), or in modality units (single DICOM images), with the mask if any."""

    def rows_for(self, row: dict) -> list[dict]:
        annotated = row.get("label_relpath") or row.get("annotation_boxes") or row.get("image_labels")
        if not (annotated or self.keep_unannotated):
            raise InputRejected(*NOT_ANNOTATED)
        pixels, mask = self.reader.read(row, unannotated=True)
        if row.get("label_relpath"):
            present = set(np.flatnonzero(np.bincount(mask.ravel())).tolist())
            unknown = sorted(present - set(self.source.labels) - {0})
            if unknown:
                raise InputRejected("mask holds values the catalog entry does not define", listed(unknown))
        if self.source.rescale_intercept:
            pixels = pixels.astype(np.float32) + self.source.rescale_intercept
        image = to_8bit(pixels, self.source.colour, self.source.display_window())
        own = self.reader.geometry(row)  # a DICOM header's plane; an image file's pixels have no physical size
        facts = dict(
            key=row["source_relpath"],
            frame=0,
            modality=self.source.modality,
            body_region=self.source.body_region,
            spacing_mm=own.get("spacing_mm"),
            patient_orientation=own.get("patient_orientation") or self.source.patient_orientation,
            view=own.get("view"),
        )
        return [planar_record(self.source, row, image, mask, self.image_size, **facts)]
