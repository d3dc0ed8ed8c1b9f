"""DICOM series to slices: the volume slicer reading a series and its SEG/RTSTRUCT annotations."""

from __future__ import annotations

import numpy as np

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import scrub
from medtrinity_tasks.preprocess.deid import file_aliases, salt_for
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.layouts import confined
from medtrinity_tasks.sources.readers import Volume


class DicomSeriesSlicer(VolumeSlicer):
    """A DICOM series (an input named by a pseudonym, its images in slice order in ``member_files``,
    its SEG and RTSTRUCT files in ``annotation_files``) with its annotations as one label volume;
    then slicing as for any volume. Reject reasons name files by pseudonym only."""

    name = "slice_dicom_series"
    version = "1"

    def __init__(self, source: SourceEntry, settings: Settings):
        super().__init__(source, settings)
        self.salt = salt_for(source, settings)
        self.roi_labels = {name: value for value, label in source.labels.items() for name in label.names()}

    def rows_for(self, row: dict) -> list[dict]:
        try:
            return super().rows_for(row)
        except InputRejected as reject:
            files = [*row["member_files"], *(row["annotation_files"] or [])]
            raise InputRejected(scrub(str(reject), file_aliases(self.salt, files))) from None

    def read(self, row: dict) -> tuple[Volume, np.ndarray]:
        from medtrinity_tasks.sources.readers.dicom import (
            known_series,
            read_rtstruct_labels,
            read_seg_labels,
            read_series,
        )

        found = known_series(
            [confined(self.root, p) for p in row["member_files"]],
            [confined(self.root, p) for p in row["annotation_files"] or []],
            self.limits,
        )
        image = read_series(found, self.limits) if (found.segs or found.rtstructs or self.unannotated_slices) else None
        if image is None:
            raise InputRejected("series has no SEG or RTSTRUCT annotation and no expert covers its modality and region")
        if not (found.segs or found.rtstructs):
            return image, self.unannotated(image.data.shape)
        labels = np.zeros(image.data.shape, dtype=np.uint16)
        for path in found.segs:
            seg = read_seg_labels(path, found, image, limits=self.limits)
            labels = np.where(seg > 0, seg, labels)
        for path in found.rtstructs:
            contours = read_rtstruct_labels(path, found, image, self.roi_labels, limits=self.limits)
            labels = np.where(contours > 0, contours, labels)
        return image, labels
