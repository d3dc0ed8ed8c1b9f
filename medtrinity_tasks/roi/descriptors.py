"""How a region looks against its surroundings, in words, by explicit thresholds."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

CONTRAST_LEVELS = 10.0
"""Mean grey-level difference (of 255) below which a region is iso-: ~16 HU in a 400 HU window."""
HETEROGENEOUS_STD = 18.0
"""Grey-level standard deviation inside the region above which it is called heterogeneous."""
RING_PIXELS = 3


def surrounding_ring(mask: np.ndarray) -> np.ndarray:
    """The pixels within ``RING_PIXELS`` of the region, outside it."""
    return ndimage.binary_dilation(mask, iterations=RING_PIXELS) & ~mask


def describe_texture(pixels: np.ndarray, mask: np.ndarray, ring: np.ndarray, modality: str) -> str:
    suffix = "dense" if modality.upper() == "CT" else "intense"
    inside = pixels[mask].astype(np.float32)
    around = pixels[ring].astype(np.float32)
    if around.size == 0:
        contrast = "of undetermined density" if suffix == "dense" else "of undetermined intensity"
    else:
        delta = inside.mean() - around.mean()
        level = "iso" if abs(delta) < CONTRAST_LEVELS else ("hyper" if delta > 0 else "hypo")
        contrast = f"{level}{suffix} relative to the surrounding tissue"
    texture = "heterogeneous" if inside.std() > HETEROGENEOUS_STD else "homogeneous"
    return f"{contrast}, {texture}"
