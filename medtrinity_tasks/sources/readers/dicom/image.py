"""Single 2D DICOM images (radiographs, mammograms) in modality units."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.dicom.header import open_dataset, read_with_pixels, rejects_malformed, scan_header
from medtrinity_tasks.sources.readers.dicom.pixels import claimed_size, decode
from medtrinity_tasks.sources.readers.dicom.planar import display_values, planar_geometry
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, FLOAT32_BYTES, InputLimits


@rejects_malformed("image header")
def read_dicom_image(path: Path, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """One 2D DICOM image (a radiograph, a mammogram) as float32 [row, column] in modality units,
    MONOCHROME1 turned so that higher is brighter, or as uint8 RGB for colour (palette, RGB, YBR). What
    ``scan`` rejects (non-image objects, no file meta, burned-in annotation) is rejected here with the same
    reason, and so is an image whose header claims more than ``limits``, before its pixels are decoded."""
    if not path.is_file():
        raise InputRejected("file is missing", path.name)
    _, reason = scan_header(path, limits)
    if reason is not None:
        raise InputRejected(reason.kind, text=reason.text)
    ds = read_with_pixels(path, limits)
    rows, columns, count, itemsize = claimed_size(ds)
    if count != 1:
        raise InputRejected(
            f"file holds {count} frames; a 2D source reads single images",
            text=f"{path.name} holds {count} frames; a 2D source reads single images",
        )
    limits.check_image(columns, rows, itemsize, itemsize + FLOAT32_BYTES)
    return display_values(ds, decode(ds, path, colour=True)[0])


@rejects_malformed("image header")
def image_geometry(path: Path, limits: InputLimits = DEFAULT_LIMITS) -> dict:
    """What a single image's header says of its plane: ``spacing_mm``, ``patient_orientation`` and ``view`` (each
    None where it says nothing), from the header alone."""
    ds = open_dataset(path, pixels=False, limits=limits)
    spacing, orientation, view = planar_geometry(ds, path)
    return {"spacing_mm": spacing, "patient_orientation": list(orientation) if orientation else None, "view": view}
