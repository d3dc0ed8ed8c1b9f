"""DICOM series to images: a volume (CT, MR, PET stacks with their SEG/RTSTRUCT annotations) through the volume
slicer, and a series of 2D objects (radiographs, mammograms, ultrasound and its cine, secondary captures, planar
nuclear medicine, any single image without a plane in patient space) as one image per object or sampled frame, in
its own plane and geometry. Reject reasons name files by pseudonym only."""

from __future__ import annotations

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import scrub
from medtrinity_tasks.preprocess.planar import NOT_ANNOTATED, planar_record, to_8bit
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.deid import file_aliases


class DicomSeriesSlicer(VolumeSlicer):
    """A DICOM series (an input named by a pseudonym, its images in slice order in ``member_files``, its SEG and
    RTSTRUCT files in ``annotation_files``, its own ``modality`` and ``body_region``): a volume is sliced as any
    volume; 2D objects become one image per object (per sampled frame of a cine)."""

    name = "slice_dicom_series"
    version = "2"
    batch_size = 4  # exports are mostly single-image objects, each a task's worth of Ray's overhead alone
    reads = (*VolumeSlicer.reads, "member_files")
    writes = (*VolumeSlicer.writes, "annotation_boxes")

    def __init__(self, source: SourceEntry, *, salt: str, keep_unannotated: bool, **slicing):
        """``salt``: the source's pseudonym salt (``deid.salt_for``); ``keep_unannotated``: 2D objects (which carry
        no annotation here) are records, as an expert follows or the entry's regions of interest are optional;
        ``slicing``: ``VolumeSlicer``'s parameters."""
        super().__init__(source, **slicing)
        self.salt = salt
        self.keep_unannotated = keep_unannotated

    def rows_for(self, row: dict) -> list[dict]:
        files = [*row["member_files"], *(row["annotation_files"] or [])]
        try:
            found = self.reader.series_of(row)
            return self.planar_rows(row, found) if found.planar else super().rows_for(row)
        except InputRejected as reject:
            text = scrub(reject.reason.text, file_aliases(self.salt, files))
            raise InputRejected(reject.reason.kind, text=text) from None

    def planar_rows(self, row: dict, found) -> list[dict]:
        """One record row per 2D object, or per frame its cine rule keeps; each named by its file's pseudonym."""
        if not self.keep_unannotated:
            raise InputRejected(*NOT_ANNOTATED)
        modality = row.get("modality") or self.source.modality
        region = row.get("body_region") or self.source.body_region
        window = self.source.display_window(modality, region)
        rows = []
        for image in self.reader.planar_images(found):
            pixels = to_8bit(image.pixels, colour=True, window=window)
            facts = dict(
                key=row["source_relpath"],
                frame=image.frame,
                modality=modality,
                body_region=region,
                spacing_mm=image.spacing_mm,
                patient_orientation=list(image.patient_orientation) if image.patient_orientation else None,
                view=image.view,
            )
            mask = np.zeros(pixels.shape[:2], dtype=np.uint16)
            rows.append(planar_record(self.source, row, pixels, mask, self.image_size, **facts))
        return rows
