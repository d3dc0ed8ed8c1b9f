"""NIfTI-1/2 volumes through nibabel, reoriented to RAS+ so slicing never guesses directions.

nibabel reads exactly what a header claims (shape times sample size, from a gzip stream too), so
the header's claims are checked before any voxel is read; and its extensions are walked first,
because nibabel reads each one as large as it says it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import shortened
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.readers.base import InputReader, Volume
from medtrinity_tasks.sources.readers.limits import (
    DEFAULT_LIMITS,
    FLOAT32_BYTES,
    InputLimits,
    binary_size,
    error_detail,
)

_SUFFIXES = (".nii", ".nii.gz")
_EXTENSION_FLAG_BYTES = 4
_EXTENSION_HEADER_BYTES = 8  # esize, ecode


def read_nifti(
    path: Path, *, labels: bool = False, channels: bool = False, limits: InputLimits = DEFAULT_LIMITS
) -> Volume:
    """Read a NIfTI file; anything unreadable or larger than ``limits`` raises ``InputRejected`` with the reason.

    Images come back as float32; label maps (``labels=True``) as non-negative integers in their
    stored width, so that counting label values stays cheap. With ``channels=True`` a 4D image
    (Decathlon BrainTumour, Prostate) keeps its channels in the 4th axis."""
    import nibabel as nib  # lazy: heavy import, and only this reader needs it

    if not path.is_file():
        raise InputRejected("file is missing", shortened(path.name))
    if not path.name.lower().endswith(_SUFFIXES):
        raise InputRejected("not a readable NIfTI file (only single-file .nii and .nii.gz are read)")
    try:
        _check_extensions(path, limits)
        image = nib.load(str(path))
        voxels = image.dataobj  # an array proxy: the header's shape, type and scaling, nothing read yet
        limits.check_volume(voxels.shape, voxels.dtype.itemsize, _bytes_per_voxel(voxels, labels))
        original = "".join(nib.aff2axcodes(image.affine))
        canonical = nib.as_closest_canonical(image)
        data = np.asanyarray(canonical.dataobj)
    except InputRejected:
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        detail = error_detail(exc, path)
        raise InputRejected("not a readable NIfTI file", text=f"not a readable NIfTI file ({detail})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 and not (channels and data.ndim == 4):
        raise InputRejected(f"expected a 3D volume{' or 4D channels' if channels else ''}, got shape {data.shape}")
    data = _label_values(data) if labels else data.astype(np.float32, copy=False)
    if not labels and not np.isfinite(data).all():
        raise InputRejected("volume holds NaN or infinite values")
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    return Volume(data=data, spacing_mm=zooms, affine=canonical.affine, original_orientation=original)


def _bytes_per_voxel(voxels, labels: bool) -> int:
    """Bytes per voxel at the read's peak: the values nibabel returns (float64 where the header scales them), plus
    an image's float32 copy (none when those values are float32) or a float label map's rounded and int32 copies."""
    scaled = (float(voxels.slope), float(voxels.inter)) != (1.0, 0.0)
    values = np.dtype(np.float64) if scaled else voxels.dtype
    if labels:
        return 2 * values.itemsize + 4 if values.kind == "f" else values.itemsize
    return values.itemsize if values == np.float32 else values.itemsize + FLOAT32_BYTES


def _check_extensions(path: Path, limits: InputLimits) -> None:
    """Walk the header extensions as nibabel will read them, skipping their contents, and refuse what would make
    nibabel read more than the limit: an extension larger than the room before the voxels (nibabel reads it whole,
    up to 2 GiB), extensions flagged where vox_offset leaves no room (it then reads them to the end of the file), and
    a vox_offset beyond the limit. A file without a NIfTI header is left to nibabel, whose error says what it is."""
    from nibabel import Nifti1Header, Nifti2Header
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path), "rb") as stream:
            block = stream.read(Nifti2Header.template_dtype.itemsize + _EXTENSION_FLAG_BYTES)
            classes = {klass.template_dtype.itemsize: klass for klass in (Nifti1Header, Nifti2Header)}
            klass = classes.get(int.from_bytes(block[:4], "little")) or classes.get(int.from_bytes(block[:4], "big"))
            if klass is None:
                return
            size = klass.template_dtype.itemsize
            header = klass(block[:size], check=False)
            offset = int(header.get_data_offset())
            if offset - size > limits.max_decoded_bytes:
                raise InputRejected(
                    "NIfTI header too large",
                    f"vox_offset {offset} puts {binary_size(offset - size)} between the header and the voxels, "
                    f"more than the {limits.max_decoded_mb} MiB allowed (MEDTRINITY_MAX_DECODED_MB)",
                )
            flag = block[size : size + _EXTENSION_FLAG_BYTES]
            if len(flag) < _EXTENSION_FLAG_BYTES or flag[0] == 0:
                return
            room = offset - size - _EXTENSION_FLAG_BYTES
            if room < 0:
                raise InputRejected("malformed NIfTI extensions", f"flagged, but vox_offset {offset} leaves no room")
            byteorder = "little" if header.endianness == "<" else "big"
            stream.seek(size + _EXTENSION_FLAG_BYTES)
            while room >= 16:  # nibabel's loop: an extension takes at least 16 bytes
                extension = stream.read(_EXTENSION_HEADER_BYTES)
                if len(extension) < _EXTENSION_HEADER_BYTES:
                    return
                esize = int.from_bytes(extension[:4], byteorder, signed=True)
                if not _EXTENSION_HEADER_BYTES <= esize <= room:
                    raise InputRejected(
                        "malformed NIfTI extensions", f"one claims {esize} bytes, {room} remain before the voxels"
                    )
                stream.seek(esize - _EXTENSION_HEADER_BYTES, 1)
                room -= esize
    except (OSError, EOFError):
        return  # not gzip, or truncated: nibabel's own error names it


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


class NiftiVolumeReader(InputReader[Volume]):
    """A NIfTI image (3D, or 4D: channels such as MR sequences over one label volume) with its NIfTI label map."""

    def read(self, row: dict, *, unannotated: bool) -> tuple[Volume, np.ndarray]:
        image = read_nifti(
            confined(self.root, row.get("file_relpath") or row["source_relpath"]), channels=True, limits=self.limits
        )
        if not row.get("label_relpath"):
            if not unannotated:
                raise InputRejected(
                    "no annotation comes with this image and no expert covers its modality and region",
                    "the source's entry sets roi: required",
                )
            return image, np.zeros(image.data.shape[:3], dtype=np.uint16)
        labels = read_nifti(confined(self.root, row["label_relpath"]), labels=True, limits=self.limits)
        if labels.data.shape != image.data.shape[:3]:
            raise InputRejected(f"label shape {labels.data.shape} differs from image shape {image.data.shape[:3]}")
        if not np.allclose(labels.affine, image.affine, atol=1e-3):
            raise InputRejected("label affine differs from image affine", "the mask is not aligned with the image")
        return image, labels.data
