"""Inputs that claim more than they hold (compression bombs) end as rejects with their numbers, before
anything is decoded; reject reasons stay short whatever an input holds.

Every hostile file is written here, small on disk. The bombs are read in a child process through the
stages or readers the pipeline uses, with the limits at their defaults, and the child's peak memory
(VmHWM) is bounded."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.samples.planar import write_pathology_tiles
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore
from tests.support import dicom_fixtures as fx

PEAK_RSS_BOUND_KIB = 600 * 1024
"""What a child that reads one bomb may take at its peak, interpreter and libraries included (about 100 MiB)."""

VOLUME_ENTRY = {
    "id": "limits_ct", "name": "Hostile CT volumes", "homepage": None, "licence": "CC0-1.0", "modality": "CT",
    "body_region": "abdomen", "format": "nifti", "layout": "msd", "synthetic": True,
    "window": {"center": 40, "width": 400},
    "labels": {1: {"name": "liver", "kind": "organ"},
               2: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}},
}  # fmt: skip
IMAGE_ENTRY = {
    "id": "limits_tiles", "name": "Hostile tiles", "homepage": None, "licence": "CC0-1.0",
    "modality": "histopathology", "body_region": "colon", "format": "image2d", "layout": "image_mask",
    "image_mask": {"images_dir": "images", "masks_dir": "masks", "mask_suffix": ".png", "mask_values": "labels"},
    "synthetic": True, "labels": {1: {"name": "tumour", "kind": "lesion", "organ": "colon", "disease": "tumour"}},
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# hostile files


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


# ---------------------------------------------------------------------------------------------------
# reading in a child


PEAK_RSS_CODE = """
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
"""The child's own peak RSS in KiB. Its rusage would not do: at exec Linux carries the forking parent's high-water
mark into the child's ru_maxrss (and so into the parent's RUSAGE_CHILDREN), and this test process holds a
sentence encoder and a knowledge index (about 1 GiB)."""


def test_a_bomb_among_good_images_ends_as_a_reject_and_the_accounting_balances(knowledge_dir, tmp_path, monkeypatch):
    root = write_pathology_tiles(tmp_path / "data", cases=2)
    png_of_zeros(root / "images" / "TUM" / "bomb.png", 30000, 30000)
    shipped = get_source("synthetic_pathology_tiles", load_settings({})).model_dump()
    (catalog := tmp_path / "catalog").mkdir()
    entry = dict(shipped, id="limits_pathology_tiles", location=str(root))
    (catalog / "limits_pathology_tiles.yaml").write_text(yaml.safe_dump(entry))
    for key, value in {
        "MEDTRINITY_CATALOG_DIRS": str(catalog),
        "MEDTRINITY_DATA_DIR": str(tmp_path / "data"),
        "MEDTRINITY_KNOWLEDGE_DIR": str(knowledge_dir),
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_RUNNER": "inprocess",
    }.items():
        monkeypatch.setenv(key, value)

    result = run_source("limits_pathology_tiles", progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 3 * 2 + 1 == counts["used"] + counts["rejected"]
    assert counts["rejected"] == 1 and counts["records"] == 6
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    store = LocalStore(str(tmp_path / "out"))
    manifest = store.read_json(manifest_key("limits_pathology_tiles"))
    assert manifest["rejected"] == [
        {
            "input": "images/TUM/bomb.png",
            "reason": "image too large: claims 30000 x 30000 pixels, more than the 100000000 allowed "
            "(MEDTRINITY_MAX_IMAGE_PIXELS)",
            "kind": "image too large",
        }
    ]
    assert manifest["rejected_by_reason"] == {"image too large": 1}
    (work,) = (tmp_path / "out").rglob("work/shard-*.json")
    assert [r["reason"] for r in json.loads(work.read_text())["rejected"]] == [manifest["rejected"][0]["reason"]]
