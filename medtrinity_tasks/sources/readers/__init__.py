"""Readers, one per format behind one interface (``Volume``), in the manner of MONAI's image readers."""

from medtrinity_tasks.sources.readers.base import Volume
from medtrinity_tasks.sources.readers.nifti import read_nifti

__all__ = ["Volume", "read_nifti"]
