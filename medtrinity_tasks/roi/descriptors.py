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


def describe_texture(
    pixels: np.ndarray, mask: np.ndarray, ring: np.ndarray, modality: str, photographic: bool = False
) -> str:
    """Contrast against the ring around the region, and homogeneity inside it, in the words of the
    modality: -dense for CT, opacity for radiographs, -intense for other radiology, darker/brighter
    for photographs."""
    grey = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    inside = grey[mask].astype(np.float32)
    around = grey[ring].astype(np.float32)
    if around.size == 0:
        contrast = "of undetermined contrast"
    else:
        delta = inside.mean() - around.mean()
        level = 1 if abs(delta) < CONTRAST_LEVELS else (2 if delta > 0 else 0)
        if photographic:
            contrast = ("darker than", "similar in tone to", "brighter than")[level] + " the surrounding tissue"
        elif modality.upper() in ("XR", "CR", "DX", "MG"):  # projection radiographs: bright = opaque
            contrast = ("more lucent than", "similar in opacity to", "more opaque than")[
                level
            ] + " the surrounding tissue"
        else:
            suffix = "dense" if modality.upper() == "CT" else "intense"
            contrast = f"{('hypo', 'iso', 'hyper')[level]}{suffix} relative to the surrounding tissue"
    texture = "heterogeneous" if inside.std() > HETEROGENEOUS_STD else "homogeneous"
    return f"{contrast}, {texture}"
