"""2D DICOM objects: radiographs, mammograms, ultrasound, secondary captures, angiography and nuclear-medicine frames,
and any image without a plane in patient space. Each image is read in its own plane, with the geometry its header
gives (pixel spacing at the patient or at the detector, patient orientation, view and laterality), in modality
units for grey images and as RGB for colour ones (palette colour through its lookup table, YBR as RGB); a
multi-frame object (cine) gives the frames a per-source rule samples."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.dicom.geometry import frames_of
from medtrinity_tasks.sources.readers.dicom.header import (
    MALFORMED,
    attribute,
    floats,
    read_with_pixels,
    rejects_malformed,
)
from medtrinity_tasks.sources.readers.dicom.pixels import claimed_size, decode, monochrome1_top
from medtrinity_tasks.sources.readers.limits import FLOAT32_BYTES, InputLimits

PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "XA", "RF", "US", "ES", "XC", "OP", "GM", "DG", "BMD"})
"""Projections and photographs: their images are never stacked into a volume, whatever positions they carry."""

_DIRECTIONS = {"L": "L", "R": "R", "A": "A", "P": "P", "H": "S", "F": "I"}
"""DICOM Patient Orientation letters (H head, F foot) as the record's letters (S superior, I inferior)."""
_LPS_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
"""The patient direction of +x, +y, +z in DICOM's LPS coordinates, and of their negatives."""
_SIDES = {"L": "left", "R": "right", "B": "bilateral"}
_VIEW = re.compile(r"^[A-Z0-9 ]{1,16}$")
"""What a View Position may be (a code string such as PA, AP, LL, CC, MLO); anything else is not repeated."""


@dataclass(frozen=True)
class PlanarImage:
    """One 2D image of a DICOM object."""

    pixels: np.ndarray
    """float32 [row, column] in modality units (higher is brighter), or uint8 [row, column, 3] RGB."""
    frame: int
    """The frame's 0-based index in its file."""
    spacing_mm: tuple[float, float] | None
    """Between rows and between columns: at the patient (PixelSpacing) or at the detector (ImagerPixelSpacing)."""
    patient_orientation: tuple[str, str] | None
    """The patient direction of +column and +row, where the header gives it."""
    view: str | None
    """Side and projection, e.g. "left CC" or "PA", where the header gives them."""


def has_patient_plane(header, path: Path) -> bool:
    """Whether every frame of a file lies on a plane in patient space (position, orientation and spacing), so
    that its series can be stacked into a volume. A single frame's three values are checked directly: every file
    of a listing is asked."""
    try:
        if int(attribute(header, "NumberOfFrames", 1) or 1) > 1 or attribute(
            header, "PerFrameFunctionalGroupsSequence"
        ):
            frames_of(header, path)
        else:
            for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
                floats(header, keyword, count, path)
    except (InputRejected, *MALFORMED):
        return False
    return True


def is_planar(header, path: Path, modality: str) -> bool:
    """Whether a series whose first file is ``header`` is read as 2D objects rather than as one volume."""
    colour = int(attribute(header, "SamplesPerPixel", 1) or 1) != 1
    return modality in PROJECTION_MODALITIES or colour or not has_patient_plane(header, path)


def sampled_frames(count: int, kept: int) -> list[int]:
    """``kept`` frame indices evenly spaced from the first to the last (all of them when there are fewer)."""
    if count <= kept:
        return list(range(count))
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, kept)})


@rejects_malformed("image header")
def read_planar(path: Path, limits: InputLimits, frames_kept: int) -> list[PlanarImage]:
    """The sampled frames of one 2D object (every frame up to ``frames_kept``), checked against ``limits`` before
    its pixels are decoded."""
    ds = read_with_pixels(path, limits)
    rows, columns, count, itemsize = claimed_size(ds)
    limits.check_volume((columns, rows, count), itemsize, itemsize + FLOAT32_BYTES)
    chosen = sampled_frames(count, frames_kept)
    stored = decode(ds, path, colour=True, frames=chosen)
    spacing, orientation, view = planar_geometry(ds, path)
    return [
        PlanarImage(display_values(ds, frame), index, spacing, orientation, view)
        for index, frame in zip(chosen, stored, strict=True)
    ]


def display_values(ds, stored: np.ndarray) -> np.ndarray:
    """A decoded frame as float32 modality units (grey, MONOCHROME1 turned so higher is brighter) or uint8 RGB."""
    photometric = str(attribute(ds, "PhotometricInterpretation", "") or "").strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _rgb8(apply_color_lut(stored, ds), 16)
    if stored.ndim == 3:
        return _rgb8(stored, int(attribute(ds, "BitsStored", 8) or 8))
    values = stored.astype(np.float32)
    top = monochrome1_top(ds)
    if top is not None:
        values = top - values
    slope = float(attribute(ds, "RescaleSlope", 1) or 1)
    intercept = float(attribute(ds, "RescaleIntercept", 0) or 0)
    return values * slope + intercept


def _rgb8(rgb: np.ndarray, bits: int) -> np.ndarray:
    """RGB of ``bits`` per sample as 8-bit RGB."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    shift = max(bits, int(rgb.max(initial=0)).bit_length()) - 8
    return np.ascontiguousarray(np.clip(rgb.astype(np.int64) >> max(shift, 0), 0, 255).astype(np.uint8))


def planar_geometry(ds, path: Path) -> tuple[tuple[float, float] | None, tuple[str, str] | None, str | None]:
    """(spacing, patient orientation, view) of a 2D object, each None where the header does not give it."""
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _positive_pair(attribute(ds, keyword))
        if values:
            spacing = values
            break
    return spacing, _orientation(ds), _view(ds)


def _positive_pair(value) -> tuple[float, float] | None:
    try:
        pair = tuple(float(v) for v in value) if value is not None else ()
    except (TypeError, ValueError):
        return None
    return (pair[0], pair[1]) if len(pair) == 2 and all(np.isfinite(pair)) and min(pair) > 0 else None


def _orientation(ds) -> tuple[str, str] | None:
    """From Patient Orientation (its first letter per direction), else from the direction cosines of the plane."""
    given = attribute(ds, "PatientOrientation")
    if given is not None and not isinstance(given, str) and len(given) == 2:
        letters = [_DIRECTIONS.get(str(value).strip()[:1].upper()) for value in given]
        if all(letters):
            return letters[0], letters[1]
    cosines = attribute(ds, "ImageOrientationPatient")
    try:
        vectors = np.array([float(v) for v in cosines], dtype=np.float64).reshape(2, 3) if cosines else None
    except (TypeError, ValueError):
        vectors = None
    if vectors is None or not np.isfinite(vectors).all() or not vectors.any(axis=1).all():
        return None
    letters = []
    for vector in vectors:  # +column runs along the row cosines, +row along the column cosines
        axis = int(np.argmax(np.abs(vector)))
        letters.append(_LPS_LETTERS[axis][0 if vector[axis] > 0 else 1])
    return letters[0], letters[1]


def _view(ds) -> str | None:
    position = str(attribute(ds, "ViewPosition", "") or "").strip().upper()
    side = str(attribute(ds, "ImageLaterality", "") or attribute(ds, "Laterality", "") or "").strip().upper()
    words = [_SIDES[side]] if side in _SIDES else []
    if _VIEW.match(position):
        words.append(position)
    return " ".join(words) or None
