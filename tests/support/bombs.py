"""Hostile files, small on disk, that claim far more than they hold: deflate and PNG bombs, NIfTI
headers and extensions, DICOM images and deflated DICOM, for the readers' limits tests."""

import gzip
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from tests.support import dicom_fixtures as fx


def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, built in milliseconds: one compressed block of 16 MiB of zeros,
    repeated (it ends in a full flush, so it refers to nothing before it), then the rest and the final block."""
    step = 16 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(step)) + compressor.flush(zlib.Z_FULL_FLUSH)
    last = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return block * (size // step) + last.compress(bytes(size % step)) + last.flush()


def zlib_zeros(size: int) -> bytes:
    """``size`` zero bytes as a zlib stream; the Adler-32 of n zeros is (n mod 65521) << 16 | 1."""
    return b"\x78\xda" + zeros_deflated(size) + struct.pack(">I", (size % 65521) << 16 | 1)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(path: Path, width: int, height: int, colour_type: int = 0, text: bytes = b"") -> Path:
    """A valid 8-bit PNG of zeros (grey, or RGB with ``colour_type`` 2), whatever its size, and optional chunks."""
    channels = {0: 1, 2: 3}[colour_type]
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + text
        + png_chunk(b"IDAT", zlib_zeros(height * (width * channels + 1)))  # a filter byte per row
        + png_chunk(b"IEND", b"")
    )
    return path


def nifti_claiming(path: Path, shape, dtype=np.int16, data_bytes: int = 4 << 20, **header_values) -> Path:
    """A .nii.gz whose header claims ``shape`` and which holds ``data_bytes`` of zeros, streamed through gzip."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    for key, value in header_values.items():
        header[key] = value
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.binaryblock + bytes(4))
        for _ in range(data_bytes >> 20):
            stream.write(bytes(1 << 20))
        stream.write(bytes(data_bytes % (1 << 20)))
    return path


def nifti_with_extension(path: Path, vox_offset: int, esize: int, content_bytes: int) -> Path:
    """A .nii.gz flagging one header extension that claims ``esize`` bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = vox_offset
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.binaryblock + b"\x01\0\0\0" + struct.pack("<ii", esize, 6) + bytes(content_bytes))
    return path


def dicom_claiming(path: Path, rows: int, columns: int) -> Path:
    """A CT image whose header claims ``rows`` x ``columns`` pixels, with one RLE fragment of a few bytes."""
    (ds,) = fx.ct_datasets("axial")[:1]
    ds.Rows, ds.Columns = rows, columns
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([struct.pack("<16I", 1, 64, *[0] * 14) + b"\x81\x00" * 8])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def deflated_dicom(path: Path, inflated_bytes: int) -> Path:
    """A Deflated Explicit VR Little Endian CT image whose dataset inflates to about ``inflated_bytes``: the header
    elements, then pixel data of zeros (of which its header claims only a slice's worth)."""
    (ds,) = fx.ct_datasets("axial")[:1]
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    elements = DicomBytesIO()
    elements.is_little_endian, elements.is_implicit_VR = True, False
    write_dataset(elements, ds)
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, inflated_bytes)
    head = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = head.compress(elements.getvalue() + pixel_header) + head.flush(zlib.Z_FULL_FLUSH)
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.write_bytes(bytes(128) + b"DICM" + meta.getvalue() + deflated + zeros_deflated(inflated_bytes))
    return path
