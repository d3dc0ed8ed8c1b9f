"""2D images (PNG, JPEG, TIFF, 16-bit PNG) and mask images through Pillow, in their stored depth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected


def _open(path: Path):
    from PIL import Image  # lazy: only 2D sources need it here

    if not path.is_file():
        raise InputRejected(f"file is missing: {path.name}")
    try:
        image = Image.open(path)
        image.load()
    except Exception as exc:  # Pillow raises several types for broken files
        detail = str(exc).replace(str(path), path.name)[:160]
        raise InputRejected(f"not a readable image ({type(exc).__name__}: {detail})") from None
    return image


def read_image(path: Path) -> np.ndarray:
    """Pixels as stored: (H, W) grey, or (H, W, 3) RGB; 8-bit, or 16/32-bit for deep greyscale."""
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else "L")
    return np.asarray(image)


def read_mask(path: Path, values: str) -> np.ndarray:
    """A mask image as label values (uint16). ``binary``: any pixel above 127 is label 1."""
    image = _open(path)
    pixels = np.asarray(image.convert("L") if values == "binary" else image)
    if pixels.ndim != 2:
        raise InputRejected(f"mask has {pixels.shape[2]} channels; label masks must be single-channel")
    if values == "binary":
        return (pixels > 127).astype(np.uint16)
    if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0:
        raise InputRejected("mask values are not non-negative integers")
    return pixels.astype(np.uint16)
