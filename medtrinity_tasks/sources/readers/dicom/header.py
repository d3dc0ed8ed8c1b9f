"""DICOM headers: the allow-list of what is ever read, reading a header within the limits, and why a file cannot
be used.

Privacy: only the keywords in ``ALLOWED_ATTRIBUTES`` are ever read (``dcmread(specific_tags=...)``
for the top-level ones; the nested ones live inside those sequences), and every value is read
through ``attribute``, which refuses any other keyword. Patient name, ID, birth date, accession number,
institution and the like are never parsed, so they cannot reach a return value, a log or a reject
reason. Reject reasons name files by their base name only.

Limits: a deflated dataset, which pydicom inflates whole even to read a header, is inflated first in
bounded steps, counting, and refused when it would pass the limit.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.reasons import Reason
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, InputLimits, error_detail

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"  # SegmentationType LABELMAP (2024 supplement)
SEG_CLASSES = (SEG_STORAGE, LABEL_MAP_SEG_STORAGE)
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


_TOP_LEVEL = (
    # identity and grouping
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "BodyPartExamined",
    "BurnedInAnnotation",
    # geometry
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "PatientOrientation",
    "ViewPosition",
    "ImageLaterality",
    "Laterality",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    # pixel description and pixels
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "RescaleSlope",
    "RescaleIntercept",
    "RedPaletteColorLookupTableDescriptor",
    "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor",
    "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
    "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData",
    "SegmentedBluePaletteColorLookupTableData",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
    # DICOM SEG
    "SegmentationType",
    "MaximumFractionalValue",
    "SegmentSequence",
    "ReferencedSeriesSequence",
    # RTSTRUCT
    "ReferencedFrameOfReferenceSequence",
    "StructureSetROISequence",
    "ROIContourSequence",
)
"""Keywords read from the top level of a file (``specific_tags``)."""

_NESTED = (
    # functional group macros (enhanced multi-frame images and SEG)
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelMeasuresSequence",
    "PixelValueTransformationSequence",
    "SegmentIdentificationSequence",
    "ReferencedSegmentNumber",
    "DerivationImageSequence",
    "SourceImageSequence",
    # references
    "ReferencedSOPInstanceUID",
    "ReferencedFrameNumber",
    "ReferencedInstanceSequence",
    "SegmentNumber",
    "RTReferencedStudySequence",
    "RTReferencedSeriesSequence",
    "ContourImageSequence",
    "ROINumber",
    "ROIName",
    "ReferencedROINumber",
    "ContourSequence",
    "ContourGeometricType",
    "ContourData",
    # file meta
    "TransferSyntaxUID",
    "FileMetaInformationGroupLength",
)
"""Keywords read inside the sequences above, and the transfer syntax from the file meta."""

ALLOWED_ATTRIBUTES: tuple[str, ...] = _TOP_LEVEL + _NESTED
"""The only DICOM keywords this module ever reads into Python values."""

_ALLOWED = frozenset(ALLOWED_ATTRIBUTES)


_NON_IMAGE_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",  # structured reports, key object selection
    "1.2.840.10008.5.1.4.1.1.11.",  # presentation states
    "1.2.840.10008.5.1.4.1.1.9.",  # waveforms (ECG, audio, haemodynamic...)
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF, CDA, STL...
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects (RT Image and RTSTRUCT are let through below)
    "1.2.840.10008.5.1.4.1.1.66",  # raw data, registrations, fiducials, surfaces (SEG let through below)
    "1.2.840.10008.5.1.4.1.1.67",  # real world value mapping
    "1.2.840.10008.5.1.4.1.1.68.",  # surface scans
    "1.2.840.10008.5.1.4.1.1.90.",  # content assessment results
    "1.2.840.10008.5.1.4.1.1.91.",  # microscopy bulk simple annotations
    "1.2.840.10008.5.1.4.1.1.200.",  # protocols
    "1.2.840.10008.5.1.4.34.",  # RT second generation, plans
    "1.2.840.10008.5.1.4.38.",  # hanging protocols
    "1.2.840.10008.5.1.4.39.",  # colour palettes
    "1.2.840.10008.1.3.10",  # media storage directory (DICOMDIR)
)
_IMAGE_EXCEPTIONS = ("1.2.840.10008.5.1.4.1.1.481.1",)  # RT Image Storage
DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"  # deflated explicit VR little endian
_PREAMBLE_AND_PREFIX_BYTES = 128 + 4
_GROUP_LENGTH_ELEMENT_BYTES = 12  # (0002,0000) UL in explicit VR: tag, VR, length, value
_INFLATE_STEP_BYTES = 2**20
MALFORMED = (ValueError, TypeError, IndexError, OverflowError)
"""What malformed header values raise when converted (``int('abc')``, ``float(None)``, short lists)."""


def rejects_malformed(what: str):
    """Turn the errors of malformed header values into ``InputRejected``, so that no input crashes a caller."""

    def wrap(function):
        @functools.wraps(function)
        def reader(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except MALFORMED as exc:
                raise InputRejected(f"malformed {what}", text=f"malformed {what} ({type(exc).__name__})") from None

        return reader

    return wrap


def attribute(ds, keyword: str, default=None):
    """A value by keyword, for allowed keywords only: the one door through which values leave a dataset."""
    if keyword not in _ALLOWED:
        raise KeyError(f"{keyword} is not in ALLOWED_ATTRIBUTES")
    if ds is None:
        return default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values convert on first access; malformed ones fail where they are used
        return getattr(ds, keyword, default)


@functools.cache
def _top_level_tags() -> list:
    """The allow-listed top-level keywords as tags, for ``dcmread(specific_tags=...)``."""
    from pydicom.tag import Tag

    return [Tag(keyword) for keyword in _TOP_LEVEL]


def read_dataset(path: Path, *, pixels: bool, limits: InputLimits = DEFAULT_LIMITS):
    """A file's allow-listed top-level elements, its pixel data included only with ``pixels``; a deflated file is
    first checked against the limits."""
    import pydicom  # lazy: heavy import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; we validate what we use
        _check_inflated_size(path, limits)
        return pydicom.dcmread(path, stop_before_pixels=not pixels, specific_tags=_top_level_tags())


def _check_inflated_size(path: Path, limits: InputLimits) -> None:
    """pydicom inflates a deflated dataset whole, in memory, even to read its header: inflate it here first, a
    step at a time and only counting, and refuse one that inflates past the limit. Files whose file meta cannot be
    read are left to ``dcmread``, whose error says why."""
    import zlib

    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:
        return
    if str(attribute(meta, "TransferSyntaxUID", "")) != DEFLATED_SYNTAX:
        return
    group_length = attribute(meta, "FileMetaInformationGroupLength")
    if group_length is None:
        raise InputRejected("deflated DICOM without a file meta group length", path.name)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = 0
    with path.open("rb") as file:
        file.seek(_PREAMBLE_AND_PREFIX_BYTES + _GROUP_LENGTH_ELEMENT_BYTES + int(group_length))
        while not inflater.eof and (deflated := file.read(_INFLATE_STEP_BYTES)):
            while deflated and not inflater.eof:
                try:
                    inflated += len(inflater.decompress(deflated, _INFLATE_STEP_BYTES))
                except zlib.error:
                    return  # corrupt: dcmread fails on it, having inflated no more than was counted here
                if inflated > limits.max_decoded_bytes:
                    raise InputRejected(
                        "deflated DICOM too large",
                        f"{path.name} inflates to more than the {limits.max_decoded_mb} MiB allowed "
                        "(MEDTRINITY_MAX_DECODED_MB)",
                    )
                deflated = inflater.unconsumed_tail


def open_dataset(path: Path, *, pixels: bool, limits: InputLimits):
    """``read_dataset`` for a file a listing named: a missing or unreadable file is a reject with its reason."""
    if not path.is_file():
        raise InputRejected("file is missing", path.name)
    try:
        return read_dataset(path, pixels=pixels, limits=limits)
    except InputRejected:
        raise
    except Exception as exc:
        reason = unreadable_reason(path, exc)
        raise InputRejected(reason.kind, text=reason.text) from None


def read_with_pixels(path: Path, limits: InputLimits):
    ds = open_dataset(path, pixels=True, limits=limits)
    if attribute(ds.file_meta, "TransferSyntaxUID") is None:
        raise InputRejected("DICOM dataset without file meta", f"the transfer syntax of {path.name} is unknown")
    return ds


def scan_header(path: Path, limits: InputLimits) -> tuple[object | None, Reason | None]:
    """A file's allowed header elements, or the reason it cannot be used."""
    try:
        stat = path.stat()
    except OSError as exc:
        return None, Reason("file cannot be read", f"file cannot be read ({type(exc).__name__})")
    if not path.is_file():
        return None, Reason.of("not a regular file")
    if stat.st_size == 0:
        return None, Reason.of("zero-byte file")
    return _scanned(path, (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns), limits)


@functools.lru_cache(maxsize=4096)
def _scanned(path: Path, version: tuple, limits: InputLimits) -> tuple[object | None, Reason | None]:
    """``scan_header``'s reading, once per version of a file (device, inode, size, modification time) in a
    process: a run's plan and its shards in one process (``medtrinity run``) read each header once."""
    try:
        header = read_dataset(path, pixels=False, limits=limits)
    except InputRejected as reject:
        return None, reject.reason
    except Exception as exc:
        return None, unreadable_reason(path, exc)
    if attribute(header.file_meta, "TransferSyntaxUID") is None:
        return None, Reason.of("DICOM dataset without file meta", "the transfer syntax is unknown")
    sop_class = str(attribute(header, "SOPClassUID", "") or "")
    if not sop_class:
        return None, Reason.of("no SOPClassUID", "not a DICOM composite object")
    if str(attribute(header, "BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return None, Reason.of("image flagged with burned-in annotation")
    if sop_class in (*SEG_CLASSES, RTSTRUCT_STORAGE):
        return header, None
    name = uid_name(sop_class)
    if sop_class.startswith(_NON_IMAGE_PREFIXES) and sop_class not in _IMAGE_EXCEPTIONS:
        return None, Reason.of("not an image", name)
    if attribute(header, "Rows") is None or attribute(header, "Columns") is None:
        return None, Reason.of("not an image", f"{name} (no Rows/Columns)")
    return header, None


def unreadable_reason(path: Path, exc: Exception) -> Reason:
    """Why ``dcmread`` failed: no preamble/file meta at all, or a DICOM dataset missing its file meta."""
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, InvalidDicomError):
        try:  # a raw dataset without preamble, 'DICM' prefix and file meta still parses when forced
            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                forced = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_top_level_tags())
            if attribute(forced, "SOPClassUID") and str(attribute(forced, "SOPClassUID")).startswith("1.2.840.10008."):
                return Reason.of(
                    "DICOM dataset without file meta (no preamble, 'DICM' prefix or transfer syntax)",
                    "rewrite it as a DICOM Part 10 file",
                )
        except Exception:
            pass
        return Reason.of("not a DICOM file (no 'DICM' prefix or file meta)")
    return Reason("not a readable DICOM file", f"not a readable DICOM file ({error_detail(exc, path)})")


def floats(ds, keyword: str, count: int, path: Path) -> np.ndarray:
    value = attribute(ds, keyword)
    try:
        values = np.array([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (count,) or not np.isfinite(values).all():
        raise InputRejected("missing geometry", f"{path.name} has no valid {keyword}")
    return values


def uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"
