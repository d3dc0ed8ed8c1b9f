"""DICOM series to slices: the volume slicer over a series and its SEG/RTSTRUCT annotations, its reasons
naming files by pseudonym."""

from __future__ import annotations

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import scrub
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.deid import file_aliases


class DicomSeriesSlicer(VolumeSlicer):
    """A DICOM series (an input named by a pseudonym, its images in slice order in ``member_files``,
    its SEG and RTSTRUCT files in ``annotation_files``) with its annotations as one label volume;
    then slicing as for any volume. Reject reasons name files by pseudonym only."""

    name = "slice_dicom_series"
    version = "1"
    reads = (*VolumeSlicer.reads, "member_files")

    def __init__(self, source: SourceEntry, *, salt: str, **slicing):
        """``salt``: the source's pseudonym salt (``deid.salt_for``); ``slicing``: ``VolumeSlicer``'s parameters."""
        super().__init__(source, **slicing)
        self.salt = salt

    def rows_for(self, row: dict) -> list[dict]:
        try:
            return super().rows_for(row)
        except InputRejected as reject:
            files = [*row["member_files"], *(row["annotation_files"] or [])]
            text = scrub(reject.reason.text, file_aliases(self.salt, files))
            raise InputRejected(reject.reason.kind, text=text) from None
