"""DICOM pixel data: what a header claims of it, to check against the limits before decoding, and the stored
values decoded through pydicom's pixel handlers."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.dicom.header import DEFLATED_SYNTAX, attribute
from medtrinity_tasks.sources.readers.limits import error_detail

_NATIVE_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    DEFLATED_SYNTAX,
)


def claimed_size(ds) -> tuple[int, int, int, int]:
    """(rows, columns, frames, bytes per pixel) as the header claims them, to check before decoding; pydicom
    unpacks 1-bit pixels (SEG) to a byte each."""
    samples = int(attribute(ds, "SamplesPerPixel", 1) or 1)
    bits = int(attribute(ds, "BitsAllocated", 8) or 8)
    frames = int(attribute(ds, "NumberOfFrames", 1) or 1)
    rows, columns = int(attribute(ds, "Rows", 0) or 0), int(attribute(ds, "Columns", 0) or 0)
    return rows, columns, frames, samples * ((bits + 7) // 8)


def decode(ds, path: Path, *, colour: bool = False, frames: list[int] | None = None) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns), or with ``colour`` (frames, rows, columns, 3) for colour
    images (YBR given as RGB), through pydicom's pixel handlers; only the ``frames`` asked for (all by default),
    so a cine of hundreds of frames is not decoded whole for the few it keeps."""
    from pydicom.uid import UID

    if attribute(ds, "PixelData") is None:
        raise InputRejected("no pixel data in file", text=f"no pixel data in {path.name}")
    samples = int(attribute(ds, "SamplesPerPixel", 1) or 1)
    if samples not in (1, 3) or (samples == 3 and not colour):
        raise InputRejected(f"colour images (SamplesPerPixel {samples}) are not read as volumes")
    rows, columns = int(attribute(ds, "Rows")), int(attribute(ds, "Columns"))
    count = int(attribute(ds, "NumberOfFrames", 1) or 1)
    syntax = str(attribute(ds.file_meta, "TransferSyntaxUID"))
    if syntax in _NATIVE_SYNTAXES:
        bits = int(attribute(ds, "BitsAllocated", 0) or 0)
        subsampled = str(attribute(ds, "PhotometricInterpretation", "") or "").strip() == "YBR_FULL_422"
        stored_samples = 2 if subsampled else samples  # YBR_FULL_422 stores two chroma samples per pair of pixels
        expected = (rows * columns * count * stored_samples * bits + 7) // 8
        stored = len(attribute(ds, "PixelData"))
        if stored < expected:
            raise InputRejected(
                "truncated pixel data in file",
                text=f"truncated pixel data in {path.name}: {stored} of {expected} bytes",
            )
    try:
        with warnings.catch_warnings(), _quiet_decoders():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array if frames is None or count == 1 else _frames_of(ds, frames)
    except Exception as exc:
        detail = error_detail(exc, path)
        if syntax in _NATIVE_SYNTAXES:
            raise InputRejected(
                "unreadable pixel data in file", text=f"unreadable pixel data in {path.name} ({detail})"
            ) from None
        raise InputRejected(f"cannot decode transfer syntax {UID(syntax).name}", detail) from None
    pixels = np.asarray(pixels)
    count = count if frames is None or count == 1 else len(frames)
    expected_values = rows * columns * count * samples
    if pixels.size != expected_values:
        raise InputRejected(
            f"pixel data of file holds {pixels.size} values, expected {expected_values}",
            text=f"pixel data of {path.name} holds {pixels.size} values, expected {expected_values}",
        )
    return pixels.reshape((count, rows, columns) + ((3,) if samples == 3 else ()))


def _frames_of(ds, frames: list[int]) -> np.ndarray:
    from pydicom.pixels import pixel_array

    return np.stack([pixel_array(ds, index=index) for index in frames])


@contextmanager
def _quiet_decoders():
    """pydicom logs each decoder plugin that fails, with its traceback, before it raises: the reject's reason says
    what failed, once."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def monochrome1_top(ds) -> int | None:
    """For MONOCHROME1 (higher is darker): min + max of the stored range, so that ``top - value``
    turns it the usual way round; None for other photometric interpretations."""
    if str(attribute(ds, "PhotometricInterpretation", "")).strip() != "MONOCHROME1":
        return None
    bits = int(attribute(ds, "BitsStored", attribute(ds, "BitsAllocated", 16)))
    return -1 if int(attribute(ds, "PixelRepresentation", 0)) == 1 else (1 << bits) - 1
