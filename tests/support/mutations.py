"""Valid small inputs of each format the pipeline reads, and the ways tests/test_properties.py breaks them.

Everything is plain data so that hypothesis can shrink it and a failing example can be pasted back as
an ``@example``: a mutation is a tuple, a file is its valid bytes with its mutations applied in order,
and the strategies only choose among them. A byte mutation names an anchor (a place found in the
bytes themselves: the file's start or end, a PNG chunk, a DICOM element's tag) and an offset from
it, so mutations land where readers decide how much to allocate or how to parse the rest: the NIfTI
header, PNG IHDR and chunk lengths, the DICOM pixel description and transfer syntax, gzip headers.

Byte mutations (``anchor`` + ``delta`` is the offset, clamped into the data):

- ``("flip", anchor, delta, bit)``, ``("put", anchor, delta, data)``, ``("cut", anchor, delta)``
  (truncate there), ``("pack", anchor, delta, struct_format, value)``;
- ``("gzip",)`` compresses what the earlier mutations made (later ones hit the gzip stream);
- ``("crc",)`` recomputes every PNG chunk's CRC, so a changed IHDR reaches the decoder.

DICOM element mutations, applied to the dataset before its bytes are written:

- ``("raw", keyword, vr, value)`` sets an element to raw value bytes (any length, any content);
- ``("syntax", uid)`` rewrites the file meta's TransferSyntaxUID, leaving the body as it was encoded.
"""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zlib
from functools import cache

import numpy as np
from hypothesis import strategies as st

NAN, INF = float("nan"), float("inf")
PNG_CHUNKS = ("IHDR", "IDAT", "IEND")

# ---------------------------------------------------------------------------------------------------
# valid files


def png(width: int = 48, height: int = 40, *, mask: bool = False, depth16: bool = False, rgb: bool = False) -> bytes:
    """A grey PNG with a bright square (or, as a mask, the square at 255 on 0), 16-bit or RGB if asked."""
    from PIL import Image

    pixels = np.zeros((height, width), np.uint8) if mask else np.full((height, width), 60, np.uint8)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 255 if mask else 200
    if not mask:
        pixels[::3, ::5] = 90  # texture, so that windowing and descriptors have something to measure
    if depth16:
        image = Image.fromarray(pixels.astype(np.uint16) * 250)
    else:
        image = Image.fromarray(np.stack([pixels] * 3, axis=-1) if rgb else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


NIFTI_SHAPE = (24, 20, 8)


@cache
def nifti(*, label: bool = False) -> bytes:
    """A small CT-like volume (int16 HU), or its label map (uint8, a blob of label 1), as a single .nii file."""
    import nibabel as nib

    x, y, z = np.meshgrid(*(np.arange(n) for n in NIFTI_SHAPE), indexing="ij")
    blob = ((x - 12) ** 2 + (y - 10) ** 2 <= 9) & (z >= 3) & (z <= 5)
    if label:
        data = blob.astype(np.uint8)
    else:
        data = (40 + 5 * x - 3 * y + 7 * z).astype(np.int16)
        data[blob] = 180
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-18.0, -15.0, -12.0]
    return nib.Nifti1Image(data, affine).to_bytes()


@cache
def dicom_series() -> tuple[bytes, ...]:
    """Six axial CT slices of the DICOM fixtures' phantom, then a SEG of its cube on them (label 1)."""
    from tests.support import dicom_fixtures as fx

    hu = fx.phantom()[:, :, 2:8]
    datasets = fx.ct_datasets(grid=hu)
    for ds in datasets:
        ds.NumberOfFrames = 1  # present, so that mutations can make it claim more
    seg = fx.seg(datasets, "axial", fx.box_mask(fx.CUBE)[:, :, 2:8])
    files = []
    for ds in [*datasets, seg]:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buffer, enforce_file_format=True)
        files.append(buffer.getvalue())
    return tuple(files)


# ---------------------------------------------------------------------------------------------------
# applying mutations


def apply(data: bytes, mutations) -> bytes:
    """``data`` with the byte mutations applied in order."""
    buffer = bytearray(data)
    for mutation in mutations:
        kind = mutation[0]
        if kind == "gzip":
            buffer = bytearray(gzip.compress(bytes(buffer), mtime=0))
            continue
        if kind == "crc":
            buffer = bytearray(png_with_crcs(bytes(buffer)))
            continue
        at = anchor_offset(bytes(buffer), mutation[1]) + mutation[2]
        if kind == "cut":
            del buffer[max(at, 0) :]
            continue
        if not buffer:
            continue
        at = min(max(at, 0), len(buffer) - 1)
        if kind == "flip":
            buffer[at] ^= 1 << mutation[3]
        elif kind == "put":
            buffer[at : at + len(mutation[3])] = mutation[3]
        elif kind == "pack":
            packed = struct.pack(mutation[3], mutation[4])
            buffer[at : at + len(packed)] = packed
        else:
            raise ValueError(f"unknown mutation {mutation!r}")
    return bytes(buffer)


def anchor_offset(data: bytes, anchor: str) -> int:
    """Where ``anchor`` lies in ``data``: 0 for "start" (and for an anchor not found), the length for "end", a PNG
    chunk's length field for its type ("IHDR"), a DICOM element's tag for its keyword ("Rows")."""
    if anchor == "start":
        return 0
    if anchor == "end":
        return len(data)
    if anchor in PNG_CHUNKS:
        return max(data.find(anchor.encode()) - 4, 0)
    return max(data.find(_tag_bytes(anchor)), 0)


def _tag_bytes(keyword: str) -> bytes:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return struct.pack("<HH", tag >> 16, tag & 0xFFFF)


def png_with_crcs(data: bytes) -> bytes:
    """``data`` with the CRC of every chunk that its length fields still let us find recomputed."""
    buffer = bytearray(data)
    at = 8
    while at + 12 <= len(buffer):
        (length,) = struct.unpack_from(">I", buffer, at)
        end = at + 8 + length
        if end + 4 > len(buffer):
            break
        struct.pack_into(">I", buffer, end, zlib.crc32(buffer[at + 4 : end]))
        at = end + 4
    return bytes(buffer)


def dicom_file(valid: bytes, element_mutations, byte_mutations) -> bytes:
    """A DICOM file's bytes with its element mutations made through pydicom, then its byte mutations."""
    data = valid
    if element_mutations:
        import pydicom
        from pydicom.dataelem import RawDataElement
        from pydicom.tag import Tag

        ds = pydicom.dcmread(io.BytesIO(valid))
        syntax = None
        for mutation in element_mutations:
            if mutation[0] == "raw":
                _, keyword, vr, value = mutation
                tag = Tag(keyword)
                ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
            else:
                syntax = mutation[1]
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        if syntax is not None:
            data = with_transfer_syntax(data, syntax)
    return apply(data, byte_mutations)


def with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """A Part 10 file whose file meta claims ``uid``, its body still encoded as before (explicit VR little endian)."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    preamble = 128 + 4
    (group_length,) = struct.unpack_from("<I", data, preamble + 8)
    body = data[preamble + 12 + group_length :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
        meta.TransferSyntaxUID = uid
        out = DicomBytesIO()
        out.is_little_endian, out.is_implicit_VR = True, False
        write_file_meta_info(out, meta, enforce_standard=False)
    return data[:preamble] + out.getvalue() + body


# ---------------------------------------------------------------------------------------------------
# strategies


def located(hot: list[tuple[str, int]]):
    """(anchor, delta): three times in four within ``width`` bytes of a hot anchor, else anywhere in the file."""
    near = st.sampled_from(hot).flatmap(lambda spot: st.tuples(st.just(spot[0]), st.integers(0, spot[1] - 1)))
    anywhere = st.one_of(
        st.tuples(st.just("start"), st.integers(0, 1 << 16)), st.tuples(st.just("end"), st.integers(-4096, -1))
    )
    return st.one_of(near, near, near, anywhere)


def field_mutations(fields, max_size: int = 3):
    """One to ``max_size`` header fields set to extreme values: ``fields`` holds (anchor, delta, format, values)."""
    field = st.sampled_from(list(fields)).flatmap(
        lambda f: st.sampled_from(f[3]).map(lambda value: ("pack", f[0], f[1], f[2], value))
    )
    return st.lists(field, min_size=1, max_size=max_size)


def byte_mutations(hot: list[tuple[str, int]], fields=(), max_size: int = 4):
    """Flips, overwrites, truncations and field values from ``fields`` (see ``field_mutations``), in any mix."""
    at = located(hot)
    flip = st.tuples(at, st.integers(0, 7)).map(lambda t: ("flip", *t[0], t[1]))
    put = st.tuples(
        at,
        st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from([b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff"])),
    ).map(lambda t: ("put", *t[0], t[1]))
    cut = st.one_of(
        st.tuples(st.just("start"), st.integers(0, 4096)),
        st.tuples(st.just("end"), st.integers(-4096, -1)),
        at,
    ).map(lambda place: ("cut", *place))
    kinds = [flip, put, cut]
    if fields:
        kinds.append(field_mutations(fields, max_size=1).map(lambda mutations: mutations[0]))
    return st.lists(st.one_of(kinds), max_size=max_size)


NIFTI_HOT = [("start", 352)]
"""The NIfTI-1 header and its extension flag: 348 + 4 bytes."""
_DIMS = [0, 1, -1, 2, 32767, -32768]
_VOLUMES = [(32767, 32767, 32767), (2048, 2048, 8), (4096, 4096, 1), (-2, -2, 8)]
"""Claims of whole volumes: far beyond the limits, just beyond, just within (2**24 voxels), negative twice."""
_SPACINGS = [NAN, INF, -INF, 0.0, -1.0, 1e30, 1e-30, 3.4e38]
_CODES = [0, 1, 2, 3, 4, 5, -1, 32767]
NIFTI_FIELDS = [
    ("start", 0, "<i", [0, -1, 348, 540, 2**31 - 1]),  # sizeof_hdr
    ("start", 40, "<h", [0, -1, 2, 3, 4, 5, 7, 8, 32767, -32768]),  # dim[0]
    *(("start", 40 + 2 * k, "<h", _DIMS) for k in range(1, 8)),  # dim[1..7]
    ("start", 42, "6s", [struct.pack("<3h", *dims) for dims in _VOLUMES]),  # dim[1..3] at once
    ("start", 70, "<h", [0, 1, 2, 4, 8, 16, 32, 64, 128, 255, 256, 512, 768, 1024, 1280, 1536, 1792, 2304, -1]),
    ("start", 72, "<h", [0, 1, 8, 16, 64, -1, 32767]),  # bitpix
    ("start", 76, "<f", [NAN, 0.0, -1.0, 1.0, 2.0]),  # pixdim[0], qfac
    *(("start", 76 + 4 * k, "<f", _SPACINGS) for k in range(1, 5)),  # pixdim[1..4]
    ("start", 108, "<f", [0.0, 1.0, 348.0, 353.0, 4096.0, 1e9, -1.0, NAN, INF, 2.0**31]),  # vox_offset
    ("start", 112, "<f", [NAN, INF, -INF, 0.0, 1e38, -1.0]),  # scl_slope
    ("start", 116, "<f", [NAN, INF, 1e38]),  # scl_inter
    ("start", 252, "<h", _CODES),  # qform_code
    ("start", 254, "<h", _CODES),  # sform_code
    *(("start", 256 + 4 * k, "<f", [NAN, INF, -INF, 2.0, -2.0, 1.0, 0.0, 1e38]) for k in range(6)),  # quatern, qoffset
    *(("start", 280 + 4 * k, "<f", [NAN, INF, 0.0, 1e30, -1e30]) for k in range(12)),  # srow_x, srow_y, srow_z
    ("start", 344, "4s", [b"n+1\0", b"ni1\0", b"n+2\0", b"\0\0\0\0", b"xyz\0"]),  # magic
    ("start", 348, "4s", [b"\1\0\0\0", b"\xff\xff\xff\xff"]),  # extension flag
    ("start", 352, "<i", [0, 8, 16, 2**31 - 1, -16]),  # first extension's esize, if flagged
]
"""(anchor, offset, struct format, extreme values) of the NIfTI-1 header fields readers trust."""
GZIP_HOT = [("start", 10), ("end", 8)]
GZIP_FIELDS = [
    ("start", 3, "B", [0x04, 0x08, 0x10, 0x1E, 0xFF]),  # FLG: FEXTRA, FNAME, FCOMMENT, reserved bits
    ("end", -4, "<I", [0, 2**32 - 1]),  # ISIZE
    ("end", -8, "<I", [0]),  # CRC32
]


@st.composite
def nifti_file(draw):
    """Mutations of a NIfTI file: header fields set to extremes, or bytes broken, or both; then, half the time,
    gzipped, and the gzip stream broken now and then."""
    raw = draw(
        st.one_of(field_mutations(NIFTI_FIELDS), byte_mutations(NIFTI_HOT), byte_mutations(NIFTI_HOT, NIFTI_FIELDS))
    )
    if not draw(st.booleans()):
        return raw
    return [*raw, ("gzip",), *draw(st.one_of(st.just([]), byte_mutations(GZIP_HOT, GZIP_FIELDS, max_size=2)))]


PNG_HOT = [("IHDR", 25), ("IDAT", 12), ("IEND", 12)]
"""IHDR's length, type, data and CRC; every chunk's length and type."""
_SIDES = [0, 1, 65535, 40000, 4096, 2**31 - 1, 2**32 - 1]
PNG_FIELDS = [
    ("IHDR", 0, ">I", [0, 12, 14, 2**31 - 1, 2**32 - 1]),  # IHDR length
    ("IHDR", 8, ">I", _SIDES),  # width
    ("IHDR", 12, ">I", _SIDES),  # height
    ("IHDR", 8, "8s", [struct.pack(">2I", side, side) for side in (40000, 65535, 4096, 2**31 - 1)]),  # both
    ("IHDR", 16, "B", [0, 1, 2, 4, 8, 16, 3, 255]),  # bit depth
    ("IHDR", 17, "B", [0, 1, 2, 3, 4, 6, 7, 255]),  # colour type
    ("IHDR", 18, "B", [1, 255]),  # compression
    ("IHDR", 19, "B", [1, 255]),  # filter
    ("IHDR", 20, "B", [1, 2, 255]),  # interlace
    ("IDAT", 0, ">I", [0, 1, 2**31 - 1, 2**32 - 1]),  # IDAT length
]


def png_file():
    """Mutations of a PNG: header fields set to extremes with their CRCs made right again (so that the claims
    reach the reader), or bytes broken with the CRCs left wrong, or both with them right."""
    return st.one_of(
        field_mutations(PNG_FIELDS).map(lambda mutations: [*mutations, ("crc",)]),
        byte_mutations(PNG_HOT),
        byte_mutations(PNG_HOT, PNG_FIELDS).map(lambda mutations: [*mutations, ("crc",)]),
    )


DICOM_HOT_KEYWORDS = [
    "TransferSyntaxUID",
    "SOPClassUID",
    "SeriesInstanceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SamplesPerPixel",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "PixelData",
]
DICOM_HOT = [(keyword, 16) for keyword in DICOM_HOT_KEYWORDS]
"""Each element's tag, VR, length and first value bytes."""
_US = [b"\x00\x00", b"\xff\xff", b"\x01\x00", b"\x00\x80", b"\x01", b"\x01\x00\x00\x00"]
_DS = [b"nan ", b"inf ", b"-inf", b"1e308 ", b"0 ", b"-1", b"x ", b""]
DICOM_ELEMENTS = [
    ("Rows", "US", _US),
    ("Columns", "US", _US),
    ("NumberOfFrames", "IS", [b"2147483647", b"0 ", b"-1", b"1e9 ", b"x ", b"99999999999999999999", b"6 "]),
    (
        "BitsAllocated",
        "US",
        [b"\x00\x00", b"\x01\x00", b"\x07\x00", b"\x08\x00", b"\x20\x00", b"\x40\x00", b"\xff\xff"],
    ),
    ("BitsStored", "US", [b"\x00\x00", b"\x11\x00", b"\xff\xff"]),
    ("HighBit", "US", [b"\x00\x00", b"\x20\x00", b"\xff\xff"]),
    ("PixelRepresentation", "US", [b"\x01\x00", b"\x02\x00"]),
    ("SamplesPerPixel", "US", [b"\x00\x00", b"\x03\x00", b"\xff\xff"]),
    ("PlanarConfiguration", "US", [b"\x01\x00", b"\x05\x00"]),
    ("PhotometricInterpretation", "CS", [b"MONOCHROME1 ", b"RGB ", b"PALETTE COLOR ", b"YBR_FULL", b""]),
    ("RescaleSlope", "DS", _DS),
    ("RescaleIntercept", "DS", _DS),
    ("PixelSpacing", "DS", [b"0\\0 ", b"-1\\1", b"nan\\nan ", b"1 ", b"x\\y ", b"1e308\\1e308 "]),
    ("ImagePositionPatient", "DS", [b"nan\\0\\0 ", b"1e308\\0\\0 ", b"0\\0 ", b"", b"0\\0\\0 "]),
    ("ImageOrientationPatient", "DS", [b"0\\0\\0\\0\\0\\0 ", b"1\\0\\0\\1\\0\\0 ", b"nan\\0\\0\\0\\1\\0 ", b"1\\0"]),
    ("SliceThickness", "DS", [b"0 ", b"-5", b"nan "]),
    ("SeriesInstanceUID", "UI", [b"", b"1.2.3\0"]),
    ("SOPClassUID", "UI", [b"", b"1.2.840.10008.5.1.4.1.1.66.4\0", b"1.2.840.10008.5.1.4.1.1.88.11\0", b"1.2.3\0"]),
    ("BurnedInAnnotation", "CS", [b"YES "]),
    ("SegmentationType", "CS", [b"FRACTIONAL", b"LABELMAP", b"OTHER "]),
    ("MaximumFractionalValue", "US", [b"\x00\x00", b"\xff\xff"]),
    ("PixelData", "OW", [b"", b"\x00\x00", b"\xff" * 64]),
]
"""(keyword, VR, raw values) of the elements that decide a DICOM image's size, layout and geometry."""
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # implicit VR little endian: the explicit body is misparsed
    "1.2.840.10008.1.2.2",  # explicit VR big endian: every number byte-swapped
    "1.2.840.10008.1.2.1.99",  # deflated: the body is no deflate stream
    "1.2.840.10008.1.2.4.50",  # JPEG baseline, over native pixels
    "1.2.840.10008.1.2.4.70",  # JPEG lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.3.4",
    "",
    "not a uid",
]


@st.composite
def dicom_file_mutations(draw):
    """(element mutations, byte mutations) for one file of the series."""
    elements = draw(
        st.lists(
            st.one_of(
                st.sampled_from(DICOM_ELEMENTS).flatmap(
                    lambda e: st.sampled_from(e[2]).map(lambda value: ("raw", e[0], e[1], value))
                ),
                st.sampled_from(TRANSFER_SYNTAXES).map(lambda uid: ("syntax", uid)),
            ),
            max_size=3,
        )
    )
    if draw(st.integers(0, 4)) == 0:  # a frame of 65535 x 65535 pixels: a claim no one element makes
        elements += [("raw", "Rows", "US", b"\xff\xff"), ("raw", "Columns", "US", b"\xff\xff")]
    return elements, draw(st.one_of(st.just([]), byte_mutations(DICOM_HOT, max_size=3)))


def text(max_size: int = 40):
    """Text as sources write it, and worse: any unicode (quotes, separators, NUL, BOM, an RTL mark, a byte that
    is not UTF-8 as os.listdir escapes it) and long runs."""
    return st.one_of(
        st.text(max_size=max_size),
        st.text(st.sampled_from(" ,;|\"'\t\n\r\0\ufeff\u202e\udcff"), max_size=max_size),
        st.sampled_from(["", " ", "x" * 300, "é" * 200, "\0" * 4, '"', '""', "a\nb", "\udcff"]),
    )


NAME_STEMS = ["case 0", "Ünïcödé", "a" * 200, "名前", " lead", "trail ", "-dash", "back\\slash", "two..dots"]
"""File name stems beyond plain ASCII: spaces, unicode, long, a backslash (a separator elsewhere), dots."""


STEM_BYTES = 200
"""The longest stem drawn: with a mask's "_segmentation.png" it still fits the file system's 255 bytes, so the
test can write it (names longer than that are ``test_a_name_longer_than_the_file_system_takes_is_rejected``)."""


def file_stems():
    """File name stems that can lie on disk (no "/" or NUL), of at most ``STEM_BYTES``."""
    stem = st.one_of(
        st.sampled_from(NAME_STEMS),
        st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=24),
    )
    return stem.filter(lambda s: s not in (".", "..") and len(s.encode()) <= STEM_BYTES)
