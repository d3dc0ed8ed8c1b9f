"""COCO run-length encoding of ROI masks, by pycocotools' mask API.

A record keeps the compressed form with its counts as text (``{"size": [h, w], "counts": str}``),
which Arrow and JSON store as a string and COCO tools read as they are.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode(mask: np.ndarray) -> dict:
    """The COCO RLE of a 2D boolean mask, its counts as text."""
    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(n) for n in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """The boolean mask of a COCO RLE (counts as text or bytes)."""
    height, width = rle["size"]
    return coco_mask.decode({"size": [int(height), int(width)], "counts": rle["counts"]}).astype(bool)
