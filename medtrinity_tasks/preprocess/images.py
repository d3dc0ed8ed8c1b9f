"""Intensity windowing, resizing and PNG encoding: the per-image work every source shares."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def window_to_uint8(pixels: np.ndarray, center: float | None = None, width: float | None = None) -> np.ndarray:
    """Map a window (e.g. HU 40 +/- 200 for soft tissue) to 0..255; no window: 1st-99th percentile."""
    if center is None or width is None:
        low, high = np.percentile(pixels, [1, 99])
        if high <= low:
            high = low + 1.0
    else:
        low, high = center - width / 2.0, center + width / 2.0
    scaled = (pixels.astype(np.float32) - low) * (255.0 / (high - low))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def fit_within(pixels: np.ndarray, labels: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Shrink an 8-bit image (Lanczos) and its label slice (nearest) so the longer side is at most
    ``max_side``, keeping the aspect ratio; never enlarge. Returns them and the scale applied."""
    height, width = labels.shape
    if not max_side or max(height, width) <= max_side:
        return pixels, labels, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
    resized_labels = np.asarray(Image.fromarray(labels.astype(np.uint16)).resize(size, Image.Resampling.NEAREST))
    return resized, resized_labels, scale
