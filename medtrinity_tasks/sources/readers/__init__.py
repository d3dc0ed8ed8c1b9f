"""Readers, one per format behind one interface (``base.InputReader``), in the manner of MONAI's image readers;
``reader_for`` is the one place where a source's format and layout choose its reader."""

from medtrinity_tasks.sources.readers.base import InputReader
from medtrinity_tasks.sources.readers.dicom.inputs import DicomImageReader, DicomSeriesReader
from medtrinity_tasks.sources.readers.image2d import PlanarReader
from medtrinity_tasks.sources.readers.nifti import NiftiVolumeReader

READERS: dict[tuple[str, str], type[InputReader]] = {
    ("nifti", "msd"): NiftiVolumeReader,
    ("nifti", "nnunet"): NiftiVolumeReader,
    ("nifti", "paired_files"): NiftiVolumeReader,
    ("dicom", "series"): DicomSeriesReader,
    ("dicom", "dicomweb"): DicomSeriesReader,
    ("dicom", "image_table"): DicomImageReader,
    ("image2d", "image_mask"): PlanarReader,
    ("image2d", "image_table"): PlanarReader,
    ("image2d", "coco"): PlanarReader,
    ("image2d", "class_folders"): PlanarReader,
}
"""The reader of each (format, layout) pair the catalog allows (``catalog.LAYOUTS``)."""


def reader_for(fmt: str, layout: str) -> type[InputReader]:
    """The reader class of a source's inputs, by its catalog format and layout."""
    return READERS[(fmt, layout)]
