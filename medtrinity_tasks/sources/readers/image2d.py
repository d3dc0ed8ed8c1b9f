"""2D images (PNG, JPEG, TIFF, 16-bit PNG) and mask images through Pillow, in their stored depth.

``Image.open`` reads a header and decodes nothing: the size it finds is checked against the limits
before ``load()`` decodes. Pillow's own bomb check is set from the same setting meanwhile, so that
it neither refuses first (without the numbers) nor warns. PNG text chunks are bounded by Pillow
itself (``PngImagePlugin.MAX_TEXT_CHUNK``, 1 MiB decompressed each, 64 MiB in all): larger ones make
the file unreadable."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import shortened
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.readers.base import InputReader
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, FLOAT32_BYTES, InputLimits, error_detail


@contextlib.contextmanager
def _pillow_refusing_above(pixels: int | None):
    """Pillow's bomb check refusing images of more than ``pixels`` (None: no check), without warnings. Pillow
    refuses above twice its ``MAX_IMAGE_PIXELS`` and warns above it, so it is set to half the limit."""
    from PIL import Image

    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None if pixels is None else pixels // 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "JPEG2000", "PPM")
"""The formats image sources ship. Pillow would otherwise try every decoder it has, EPS included,
which hands the file to Ghostscript."""


def _open(path: Path, limits: InputLimits):
    from PIL import Image, ImageMode  # lazy: only 2D sources need it here

    if not path.is_file():
        raise InputRejected("file is missing", shortened(path.name))
    try:
        with _pillow_refusing_above(None):  # the size is checked just below, with its numbers
            image = Image.open(path, formats=IMAGE_FORMATS)
        with image:
            itemsize = np.dtype(ImageMode.getmode(image.mode).typestr).itemsize * len(image.getbands())
            limits.check_image(image.width, image.height, itemsize, itemsize + FLOAT32_BYTES)
            with _pillow_refusing_above(limits.max_image_pixels):  # frames or tiles larger than the image
                image.load()
    except InputRejected:
        raise
    except Image.DecompressionBombError:
        raise InputRejected(
            "image too large",
            f"a frame or tile claims more than the {limits.max_image_pixels} pixels allowed "
            "(MEDTRINITY_MAX_IMAGE_PIXELS)",
        ) from None
    except Exception as exc:  # Pillow raises several types for broken files
        raise InputRejected("not a readable image", text=f"not a readable image ({error_detail(exc, path)})") from None
    return image


def read_image(path: Path, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Pixels as stored: (H, W) grey, or (H, W, 3) RGB; 8-bit, or 16/32-bit for deep greyscale."""
    image = _open(path, limits)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else "L")
    return np.asarray(image)


def read_mask(path: Path, values: str, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A mask image as label values (uint16). ``binary``: any pixel above 127 is label 1."""
    image = _open(path, limits)
    pixels = np.asarray(image.convert("L") if values == "binary" else image)
    if pixels.ndim != 2:
        raise InputRejected(f"mask has {pixels.shape[2]} channels; label masks must be single-channel")
    if values == "binary":
        return (pixels > 127).astype(np.uint16)
    if not np.issubdtype(pixels.dtype, np.integer) or pixels.min() < 0:
        raise InputRejected("mask values are not non-negative integers")
    return pixels.astype(np.uint16)


class PlanarReader(InputReader[np.ndarray]):
    """An image file with its mask, if it has one (the image_mask layout), else an empty mask."""

    def pixels(self, path: Path) -> np.ndarray:
        """The image's pixels as stored."""
        return read_image(path, self.limits)

    def geometry(self, row: dict) -> dict:
        """What the image itself says of its plane (a DICOM header does; an image file says nothing)."""
        return {}

    def read(self, row: dict, *, unannotated: bool) -> tuple[np.ndarray, np.ndarray]:
        pixels = self.pixels(confined(self.root, row.get("file_relpath") or row["source_relpath"]))
        if not row.get("label_relpath"):  # boxes or class labels only, or no annotation
            return pixels, np.zeros(pixels.shape[:2], dtype=np.uint16)
        mask = read_mask(confined(self.root, row["label_relpath"]), self.source.image_mask.mask_values, self.limits)
        if mask.shape != pixels.shape[:2]:
            raise InputRejected(f"mask size {mask.shape[::-1]} differs from image size {pixels.shape[1::-1]}")
        return pixels, mask
