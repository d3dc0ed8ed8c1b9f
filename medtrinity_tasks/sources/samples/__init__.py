"""Synthetic sample sources, one per supported format, for demos and tests. All computer-generated,
no patient data, and labelled so in the files they write: ``ct`` (NIfTI volumes in the Decathlon
layout, drawn from ``phantom``), ``dicom`` (the same phantom as CT series with SEG), ``planar``
(dermoscopy images with masks, chest radiographs with a table, pathology tiles in class folders)."""

from medtrinity_tasks.sources.samples.ct import CT_SOURCE_ID, write_ct_abdomen
from medtrinity_tasks.sources.samples.dicom import DICOM_SOURCE_ID, write_ct_dicom
from medtrinity_tasks.sources.samples.planar import (
    CXR_SOURCE_ID,
    DERMOSCOPY_SOURCE_ID,
    TILES_SOURCE_ID,
    write_chest_xray,
    write_dermoscopy,
    write_pathology_tiles,
)

SAMPLE_SOURCES = {
    CT_SOURCE_ID: write_ct_abdomen,
    DERMOSCOPY_SOURCE_ID: write_dermoscopy,
    CXR_SOURCE_ID: write_chest_xray,
    TILES_SOURCE_ID: write_pathology_tiles,
    DICOM_SOURCE_ID: write_ct_dicom,
}
"""Every sample source by catalog id, with the function that writes it."""
