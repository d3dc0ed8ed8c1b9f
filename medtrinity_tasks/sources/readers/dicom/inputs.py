"""The readers of listed DICOM inputs: a series (a volume with its SEG and RTSTRUCT files, or 2D objects), and a
single 2D image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.readers.base import InputReader, Volume
from medtrinity_tasks.sources.readers.dicom.annotations import read_rtstruct_labels, read_seg_labels
from medtrinity_tasks.sources.readers.dicom.image import image_geometry, read_dicom_image
from medtrinity_tasks.sources.readers.dicom.planar import PlanarImage, read_planar
from medtrinity_tasks.sources.readers.dicom.series import DicomSeries, known_series, read_series
from medtrinity_tasks.sources.readers.image2d import PlanarReader
from medtrinity_tasks.sources.readers.limits import InputLimits

if TYPE_CHECKING:
    from medtrinity_tasks.sources.catalog import SourceEntry


class DicomSeriesReader(InputReader[Volume]):
    """A listed series (its images in slice order in ``member_files``, its SEG and RTSTRUCT files in
    ``annotation_files``) with its annotations as one label volume; RTSTRUCT ROIs are labelled by their names
    in the catalog entry."""

    def __init__(self, source: SourceEntry, root: Path, limits: InputLimits):
        super().__init__(source, root, limits)
        self.roi_labels = {name: value for value, label in source.labels.items() for name in label.names()}

    def series_of(self, row: dict) -> DicomSeries:
        """The listed series, rebuilt from its first file's header (``series.known_series``)."""
        return known_series(
            [confined(self.root, p) for p in row["member_files"]],
            [confined(self.root, p) for p in row["annotation_files"] or []],
            self.limits,
        )

    def planar_images(self, found: DicomSeries) -> Iterator[PlanarImage]:
        """The images of a 2D object (the frames the entry's ``cine`` rule keeps), one file decoded at a time."""
        for path in found.files:
            yield from read_planar(path, self.limits, self.source.cine.frames)

    def read(self, row: dict, *, unannotated: bool) -> tuple[Volume, np.ndarray]:
        found = self.series_of(row)
        if not (found.segs or found.rtstructs):
            if not unannotated:  # refused before any pixel is decoded
                raise InputRejected(
                    "series has no SEG or RTSTRUCT annotation and no expert covers its modality and region",
                    "the source's entry sets roi: required",
                )
            image = read_series(found, self.limits)
            return image, np.zeros(image.data.shape[:3], dtype=np.uint16)
        image = read_series(found, self.limits)
        labels = np.zeros(image.data.shape, dtype=np.uint16)
        for path in found.segs:
            seg = read_seg_labels(path, found, image, limits=self.limits)
            labels = np.where(seg > 0, seg, labels)
        for path in found.rtstructs:
            contours = read_rtstruct_labels(path, found, image, self.roi_labels, limits=self.limits)
            labels = np.where(contours > 0, contours, labels)
        return image, labels


class DicomImageReader(PlanarReader):
    """A single DICOM image (a radiograph) in modality units, with its mask if it has one, and its plane."""

    def pixels(self, path: Path) -> np.ndarray:
        return read_dicom_image(path, self.limits)

    def geometry(self, row: dict) -> dict:
        return image_geometry(confined(self.root, row.get("file_relpath") or row["source_relpath"]), self.limits)
