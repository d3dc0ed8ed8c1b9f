"""What readers return and how a first stage calls them: voxels in RAS+ order with their spacing stated, and one
interface to read a listed input (its image and the labels aligned with it) whatever its format."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import numpy as np

from medtrinity_tasks.sources.readers.limits import InputLimits

if TYPE_CHECKING:
    from medtrinity_tasks.sources.catalog import SourceEntry


@dataclass(frozen=True)
class Volume:
    data: np.ndarray
    """Voxels indexed [x, y, z] with x increasing to the patient's Right, y Anterior, z Superior."""
    spacing_mm: tuple[float, float, float]
    """Voxel size along x, y, z."""
    affine: np.ndarray
    """The RAS+ affine of ``data`` (voxel index to world millimetres)."""
    original_orientation: str
    """Axis codes of the file as stored, e.g. 'LPS' for a DICOM-derived volume."""


ImageT = TypeVar("ImageT")
"""What a reader's image is: a ``Volume`` for volume sources, pixels [row, column(, channel)] for 2D ones."""


class InputReader(ABC, Generic[ImageT]):
    """Reads one input of a layout's listing (a row naming its files) from the source directory: every file it
    opens is confined to that directory, and anything unreadable or larger than ``limits`` raises
    ``InputRejected`` with the reason."""

    def __init__(self, source: SourceEntry, root: Path, limits: InputLimits):
        self.source = source
        self.root = root
        self.limits = limits

    @abstractmethod
    def read(self, row: dict, *, unannotated: bool) -> tuple[ImageT, np.ndarray]:
        """The input's image and its labels, aligned pixel for pixel (voxel for voxel).

        ``unannotated`` says whether an input that comes without annotation files is wanted (an expert will label
        it): it then gets empty labels; otherwise it is rejected, before its pixels are decoded where the format
        allows. A 2D image without a mask is always read, with an empty mask: its boxes or labels come with its row."""
