"""NIfTI-1/2 volumes through nibabel, reoriented to RAS+ so slicing never guesses directions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.base import Volume


def read_nifti(path: Path, *, labels: bool = False, channels: bool = False) -> Volume:
    """Read a NIfTI file; anything unreadable raises ``InputRejected`` with the reason.

    Images come back as float32; label maps (``labels=True``) as non-negative integers in their
    stored width, so that counting label values stays cheap. With ``channels=True`` a 4D image
    (Decathlon BrainTumour, Prostate) keeps its channels in the 4th axis."""
    import nibabel as nib  # lazy: heavy import, and only this reader needs it

    if not path.is_file():
        raise InputRejected(f"file is missing: {path.name}")
    try:
        image = nib.load(str(path))
        original = "".join(nib.aff2axcodes(image.affine))
        canonical = nib.as_closest_canonical(image)
        data = np.asanyarray(canonical.dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        kind = type(exc).__name__
        detail = str(exc).replace(str(path), path.name)[:160]
        raise InputRejected(f"not a readable NIfTI file ({kind}: {detail})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 and not (channels and data.ndim == 4):
        raise InputRejected(f"expected a 3D volume{' or 4D channels' if channels else ''}, got shape {data.shape}")
    data = _label_values(data) if labels else data.astype(np.float32, copy=False)
    if not labels and not np.isfinite(data).all():
        raise InputRejected("volume holds NaN or infinite values")
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    return Volume(data=data, spacing_mm=zooms, affine=canonical.affine, original_orientation=original)


def _label_values(data: np.ndarray) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating):  # label maps are often saved as float
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise InputRejected("label map holds non-integer values")
        data = rounded.astype(np.int32)
    if not np.issubdtype(data.dtype, np.integer):
        raise InputRejected(f"label map has non-numeric type {data.dtype}")
    if data.min() < 0:
        raise InputRejected("label map holds negative values")
    return data
