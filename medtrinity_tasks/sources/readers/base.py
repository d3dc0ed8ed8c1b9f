"""The one shape every reader returns: voxels in RAS+ order with their spacing stated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
