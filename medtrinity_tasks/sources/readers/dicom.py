"""DICOM series to RAS+ volumes through pydicom, in the manner of MONAI's image readers.

``scan`` reads headers only and groups image files into series (by SeriesInstanceUID), attaching DICOM
SEG and RTSTRUCT files to the series they reference; files that cannot be used come back as rejects
with a reason. ``read_series`` sorts a series' slices (or a multi-frame image's frames) along the
slice normal, takes the slice spacing from the positions, applies the modality rescale, inverts
MONOCHROME1, decodes compressed transfer syntaxes through pydicom's pixel handlers and returns the
same ``Volume`` as the NIfTI reader: ``data[x, y, z]`` in RAS+ order. ``read_seg_labels`` and
``read_rtstruct_labels`` turn a SEG or an RTSTRUCT into a label volume aligned voxel for voxel
with that ``Volume``.

Limits: what a file claims (Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated, summed
over a series' files) is checked against ``InputLimits`` before its pixels are decoded; a deflated
dataset, which pydicom inflates whole even to read a header, is inflated first in bounded steps,
counting, and refused when it would pass the limit.

Privacy: only the keywords in ``ALLOWED_ATTRIBUTES`` are ever read (``dcmread(specific_tags=...)``
for the top-level ones; the nested ones live inside those sequences), and every value is read
through ``_get``, which refuses any other keyword. Patient name, ID, birth date, accession number,
institution and the like are never parsed, so they cannot reach a return value, a log or a reject
reason. Reject reasons name files by their base name only.

Patient coordinates in DICOM are LPS (x to the patient's left, y posterior, z superior); a voxel's
position is ``ImagePositionPatient + column * PixelSpacing[1] * row_cosines + row *
PixelSpacing[0] * column_cosines``. The stored grid is indexed [column, row, slice] with slices
sorted along the normal (row_cosines x column_cosines), flipped to RAS and reordered to the closest
canonical (RAS+) orientation with ``nibabel.orientations``, as ``nibabel.as_closest_canonical``
does for NIfTI.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.base import Volume
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, FLOAT32_BYTES, InputLimits, error_detail, listed

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
    "SliceThickness",
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
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"  # deflated explicit VR little endian
_NATIVE_SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    _DEFLATED_SYNTAX,
)
_PREAMBLE_AND_PREFIX_BYTES = 128 + 4
_GROUP_LENGTH_ELEMENT_BYTES = 12  # (0002,0000) UL in explicit VR: tag, VR, length, value
_INFLATE_STEP_BYTES = 2**20
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_MALFORMED = (ValueError, TypeError, IndexError, OverflowError)
"""What malformed header values raise when converted (``int('abc')``, ``float(None)``, short lists)."""


def _rejects_malformed(what: str):
    """Turn the errors of malformed header values into ``InputRejected``, so that no input crashes a caller."""

    def wrap(function):
        @functools.wraps(function)
        def reader(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except _MALFORMED as exc:
                raise InputRejected(f"malformed {what} ({type(exc).__name__})") from None

        return reader

    return wrap


@dataclass(frozen=True)
class DicomSeries:
    """One image series found by ``scan``, with the annotation files that reference it."""

    series_uid: str
    """SeriesInstanceUID, for grouping only: the pipeline hashes it and never writes it to a record."""
    modality: str
    files: tuple[Path, ...]
    """Image files, sorted along the slice normal (by path when the headers lack geometry)."""
    segs: tuple[Path, ...] = ()
    rtstructs: tuple[Path, ...] = ()
    body_part: str | None = None


@dataclass
class _Frame:
    """One 2D image of a series: a single-frame file or one frame of a multi-frame file."""

    path: Path
    frame: int  # 0-based index within its file
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient (row cosines, column cosines)
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    rows: int
    columns: int
    slope: float = 1.0
    intercept: float = 0.0
    thickness: float | None = None
    sop_uid: str | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------------------------------
# scanning


def scan(paths: list[Path], limits: InputLimits = DEFAULT_LIMITS) -> tuple[list[DicomSeries], dict[Path, str]]:
    """Group DICOM files into image series from their headers; return the series and the rejects.

    Series come back sorted by their first file's path; SEG and RTSTRUCT files are attached to the
    series they reference, or rejected when that series is not among ``paths``."""
    rejects: dict[Path, str] = {}
    images: dict[str, list[tuple[Path, object]]] = {}
    annotations: list[tuple[Path, object, str]] = []
    for path in paths:
        header, reason = _scan_header(Path(path), limits)
        if reason is not None:
            rejects[path] = reason
            continue
        sop_class = str(_get(header, "SOPClassUID", ""))
        if sop_class in (*SEG_CLASSES, RTSTRUCT_STORAGE):
            annotations.append((path, header, sop_class))
            continue
        series_uid = _get(header, "SeriesInstanceUID")
        if not series_uid:
            rejects[path] = "no SeriesInstanceUID: the image cannot be grouped into a series"
            continue
        images.setdefault(str(series_uid), []).append((path, header))

    instance_series = {
        str(_get(header, "SOPInstanceUID")): uid
        for uid, members in images.items()
        for _, header in members
        if _get(header, "SOPInstanceUID")
    }
    segs: dict[str, list[Path]] = {}
    rtstructs: dict[str, list[Path]] = {}
    for path, header, sop_class in annotations:
        kind = "SEG" if sop_class in SEG_CLASSES else "RTSTRUCT"
        series_uids, instance_uids = _annotation_references(header, kind)
        referenced = {uid for uid in series_uids if uid in images}
        referenced |= {instance_series[uid] for uid in instance_uids if uid in instance_series}
        if not series_uids and not instance_uids:
            rejects[path] = f"{kind} names no referenced series or image"
        elif not referenced:
            rejects[path] = f"{kind} references a series that is not in the source"
        else:
            for uid in sorted(referenced):
                (segs if kind == "SEG" else rtstructs).setdefault(uid, []).append(path)

    series = []
    for uid, members in images.items():
        first = members[0][1]
        series.append(
            DicomSeries(
                series_uid=uid,
                modality=str(_get(first, "Modality", "") or ""),
                files=tuple(_sorted_paths(members)),
                segs=tuple(sorted(segs.get(uid, []))),
                rtstructs=tuple(sorted(rtstructs.get(uid, []))),
                body_part=str(_get(first, "BodyPartExamined")) if _get(first, "BodyPartExamined") else None,
            )
        )
    series.sort(key=lambda s: str(min(s.files)))
    return series, rejects


def _scan_header(path: Path, limits: InputLimits) -> tuple[object | None, str | None]:
    """A file's allowed header elements, or the reason it cannot be used."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"file cannot be read ({type(exc).__name__})"
    if not path.is_file():
        return None, "not a regular file"
    if size == 0:
        return None, "zero-byte file"
    try:
        header = _read(path, pixels=False, limits=limits)
    except InputRejected as reject:
        return None, str(reject)
    except Exception as exc:
        return None, _unreadable_reason(path, exc)
    if _get(header.file_meta, "TransferSyntaxUID") is None:
        return None, "DICOM dataset without file meta: the transfer syntax is unknown"
    sop_class = str(_get(header, "SOPClassUID", "") or "")
    if not sop_class:
        return None, "no SOPClassUID: not a DICOM composite object"
    if str(_get(header, "BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return None, "image flagged with burned-in annotation"
    if sop_class in (*SEG_CLASSES, RTSTRUCT_STORAGE):
        return header, None
    name = _uid_name(sop_class)
    if sop_class.startswith(_NON_IMAGE_PREFIXES) and sop_class not in _IMAGE_EXCEPTIONS:
        return None, f"not an image: {name}"
    if _get(header, "Rows") is None or _get(header, "Columns") is None:
        return None, f"not an image: {name} (no Rows/Columns)"
    return header, None


def _unreadable_reason(path: Path, exc: Exception) -> str:
    """Why ``dcmread`` failed: no preamble/file meta at all, or a DICOM dataset missing its file meta."""
    from pydicom.errors import InvalidDicomError

    if isinstance(exc, InvalidDicomError):
        try:  # a raw dataset without preamble, 'DICM' prefix and file meta still parses when forced
            import pydicom

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                forced = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_tags())
            if _get(forced, "SOPClassUID") and str(_get(forced, "SOPClassUID")).startswith("1.2.840.10008."):
                return (
                    "DICOM dataset without file meta (no preamble, 'DICM' prefix or transfer syntax): "
                    "rewrite it as a DICOM Part 10 file"
                )
        except Exception:
            pass
        return "not a DICOM file (no 'DICM' prefix or file meta)"
    return f"not a readable DICOM file ({error_detail(exc, path)})"


def _annotation_references(header, kind: str) -> tuple[set[str], set[str]]:
    """(series UIDs, SOP instance UIDs) that a SEG or an RTSTRUCT references."""
    series_uids: set[str] = set()
    instance_uids: set[str] = set()
    if kind == "SEG":
        for item in _get(header, "ReferencedSeriesSequence", []) or []:
            if _get(item, "SeriesInstanceUID"):
                series_uids.add(str(_get(item, "SeriesInstanceUID")))
            for instance in _get(item, "ReferencedInstanceSequence", []) or []:
                instance_uids.add(str(_get(instance, "ReferencedSOPInstanceUID")))
        if series_uids:  # the per-frame references are one item per frame: parse them only when needed
            return series_uids, instance_uids
        for group in _get(header, "PerFrameFunctionalGroupsSequence", []) or []:
            for derivation in _get(group, "DerivationImageSequence", []) or []:
                for source in _get(derivation, "SourceImageSequence", []) or []:
                    instance_uids.add(str(_get(source, "ReferencedSOPInstanceUID")))
    else:
        for frame_of_reference in _get(header, "ReferencedFrameOfReferenceSequence", []) or []:
            for study in _get(frame_of_reference, "RTReferencedStudySequence", []) or []:
                for item in _get(study, "RTReferencedSeriesSequence", []) or []:
                    if _get(item, "SeriesInstanceUID"):
                        series_uids.add(str(_get(item, "SeriesInstanceUID")))
                    for image in _get(item, "ContourImageSequence", []) or []:
                        instance_uids.add(str(_get(image, "ReferencedSOPInstanceUID")))
        for roi in _get(header, "ROIContourSequence", []) or []:
            for contour in _get(roi, "ContourSequence", []) or []:
                for image in _get(contour, "ContourImageSequence", []) or []:
                    instance_uids.add(str(_get(image, "ReferencedSOPInstanceUID")))
    return series_uids, instance_uids


def _sorted_paths(members: list[tuple[Path, object]]) -> list[Path]:
    """Files along the slice normal of the first file; by path when geometry is missing."""
    members = sorted(members, key=lambda m: str(m[0]))
    try:
        planes = [_first_plane(header, path) for path, header in members]
    except (InputRejected, *_MALFORMED):  # read_series says what is missing
        return [path for path, _ in members]
    normal = _normal(planes[0][1])
    keyed = sorted(zip(planes, members, strict=True), key=lambda pm: (float(pm[0][0] @ normal), str(pm[1][0])))
    return [member[0] for _, member in keyed]


def _first_plane(header, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Position and orientation of a file's first frame: from the top level of a single-frame image
    (two values, cheap), from the functional groups of a multi-frame one."""
    if _get(header, "ImagePositionPatient") is not None and _get(header, "ImageOrientationPatient") is not None:
        return _floats(header, "ImagePositionPatient", 3, path), _floats(header, "ImageOrientationPatient", 6, path)
    frame = _frames_of(header, path)[0]
    return frame.position, frame.orientation


def known_series(files: list[Path], annotations: list[Path], limits: InputLimits = DEFAULT_LIMITS) -> DicomSeries:
    """A series that an earlier ``scan`` grouped (``files`` in slice order) with its SEG and
    RTSTRUCT files, rebuilt from one header each instead of scanning it again; ``read_series``
    checks that every file still belongs to it."""
    changed = "the series' files no longer form one series: the source changed after listing"
    header, reason = _scan_header(files[0], limits) if files else (None, "no files")
    if reason is not None:
        raise InputRejected(changed)
    segs, rtstructs = [], []
    for path in annotations:
        annotation, reason = _scan_header(path, limits)
        sop_class = str(_get(annotation, "SOPClassUID", "") or "") if reason is None else ""
        if sop_class not in (*SEG_CLASSES, RTSTRUCT_STORAGE):
            raise InputRejected(changed)
        (segs if sop_class in SEG_CLASSES else rtstructs).append(path)
    return DicomSeries(
        series_uid=str(_get(header, "SeriesInstanceUID")),
        modality=str(_get(header, "Modality", "") or ""),
        files=tuple(files),
        segs=tuple(segs),
        rtstructs=tuple(rtstructs),
        body_part=str(_get(header, "BodyPartExamined")) if _get(header, "BodyPartExamined") else None,
    )


# ---------------------------------------------------------------------------------------------------
# reading a series


@_rejects_malformed("image header")
def read_series(series: DicomSeries, limits: InputLimits = DEFAULT_LIMITS) -> Volume:
    """The series as a float32 RAS+ ``Volume`` in modality units (e.g. HU for CT).

    Each file is decoded as soon as it is read, once the voxels its headers and those before it
    claim fit ``limits``: so the series never holds more than one file's raw data besides the
    pixels it may hold. Raises ``InputRejected`` for an inconsistent series, missing geometry,
    duplicate or unevenly spaced positions, truncated pixel data, a transfer syntax that cannot be
    decoded or a series larger than ``limits``."""
    if not series.files:
        raise InputRejected("series holds no image files")
    frames: list[_Frame] = []
    decoded = []  # per file: its path, stored values and MONOCHROME1 top
    sizes: set[tuple[int, int]] = set()
    voxels = itemsize = 0
    for path in series.files:
        ds = _read_for_pixels(path, limits)
        if str(_get(ds, "SeriesInstanceUID", "")) != series.series_uid:
            raise InputRejected("the series' files no longer form one series: the source changed after listing")
        frames.extend(_frames_of(ds, path))
        rows, columns, count, bytes_per_pixel = _claimed(ds)
        sizes.add((rows, columns))
        voxels += rows * columns * count
        itemsize = max(itemsize, bytes_per_pixel)
        # the peak is the stored values with the float32 volume, or that volume with its RAS+ copy
        limits.check_volume(
            (columns, rows, len(frames)) if len(sizes) == 1 else (voxels,),
            itemsize,
            max(itemsize, FLOAT32_BYTES) + FLOAT32_BYTES,
        )
        decoded.append((path, _decode(ds, path), _monochrome1_top(ds)))
    ordered, lps_affine, spacing = _geometry(frames)

    index_of = {(f.path, f.frame): k for k, f in enumerate(ordered)}
    rows, columns = ordered[0].rows, ordered[0].columns
    data = np.empty((columns, rows, len(ordered)), dtype=np.float32)
    for path, stored, top in decoded:
        for frame_index in range(stored.shape[0]):
            k = index_of[(path, frame_index)]
            frame = ordered[k]
            values = stored[frame_index].astype(np.float64)
            if top is not None:
                values = top - values
            data[:, :, k] = (values * frame.slope + frame.intercept).T
    decoded.clear()
    if not np.isfinite(data).all():
        raise InputRejected("volume holds NaN or infinite values")
    data, affine, original, spacing_ras = _to_ras(data, lps_affine, spacing)
    return Volume(data=data, spacing_mm=spacing_ras, affine=affine, original_orientation=original)


def _monochrome1_top(ds) -> int | None:
    """For MONOCHROME1 (higher is darker): min + max of the stored range, so that ``top - value``
    turns it the usual way round; None for other photometric interpretations."""
    if str(_get(ds, "PhotometricInterpretation", "")).strip() != "MONOCHROME1":
        return None
    bits = int(_get(ds, "BitsStored", _get(ds, "BitsAllocated", 16)))
    return -1 if int(_get(ds, "PixelRepresentation", 0)) == 1 else (1 << bits) - 1


@_rejects_malformed("image header")
def read_dicom_image(path: Path, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """One 2D DICOM image (a radiograph, a mammogram) as float32 [row, column] in modality units,
    MONOCHROME1 turned so that higher is brighter. What ``scan`` rejects (non-image objects, no
    file meta, burned-in annotation) is rejected here with the same reason, and so is an image
    whose header claims more than ``limits``, before its pixels are decoded."""
    if not path.is_file():
        raise InputRejected(f"file is missing: {path.name}")
    _, reason = _scan_header(path, limits)
    if reason is not None:
        raise InputRejected(reason)
    ds = _read_for_pixels(path, limits)
    rows, columns, count, itemsize = _claimed(ds)
    if count != 1:
        raise InputRejected(f"{path.name} holds {count} frames; a 2D source reads single images")
    limits.check_image(columns, rows, itemsize, itemsize + FLOAT32_BYTES)
    stored = _decode(ds, path)
    values = stored[0].astype(np.float32)
    top = _monochrome1_top(ds)
    if top is not None:
        values = top - values
    slope = float(_get(ds, "RescaleSlope", 1) or 1)
    intercept = float(_get(ds, "RescaleIntercept", 0) or 0)
    return values * slope + intercept


def _read_for_pixels(path: Path, limits: InputLimits):
    if not path.is_file():
        raise InputRejected(f"file is missing: {path.name}")
    try:
        ds = _read(path, pixels=True, limits=limits)
    except InputRejected:
        raise
    except Exception as exc:
        raise InputRejected(_unreadable_reason(path, exc)) from None
    if _get(ds.file_meta, "TransferSyntaxUID") is None:
        raise InputRejected(f"DICOM dataset without file meta: the transfer syntax of {path.name} is unknown")
    return ds


def _frames_of(ds, path: Path) -> list[_Frame]:
    """The geometry of every frame in a file: top-level for single-frame images, functional groups
    (per-frame first, then shared) for enhanced multi-frame images."""
    try:
        return _frames_in(ds, path)
    except _MALFORMED as exc:
        raise InputRejected(f"malformed geometry or pixel description in {path.name} ({type(exc).__name__})") from None


def _frames_in(ds, path: Path) -> list[_Frame]:
    rows, columns = _get(ds, "Rows"), _get(ds, "Columns")
    if rows is None or columns is None:
        raise InputRejected(f"missing geometry: {path.name} has no Rows/Columns")
    count = int(_get(ds, "NumberOfFrames", 1) or 1)
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence", None) or []
    shared_items = _get(ds, "SharedFunctionalGroupsSequence", None) or []
    shared = shared_items[0] if len(shared_items) else None
    if per_frame and len(per_frame) != count:
        raise InputRejected(f"{path.name} has {count} frames but {len(per_frame)} per-frame functional groups")

    def macro(index: int, keyword: str):
        for group in (per_frame[index] if per_frame else None, shared):
            items = _get(group, keyword) if group is not None else None
            if items:
                return items[0]
        return None

    sop_uid = str(_get(ds, "SOPInstanceUID")) if _get(ds, "SOPInstanceUID") else None
    frames = []
    for index in range(count):
        plane = macro(index, "PlanePositionSequence")
        orientation = macro(index, "PlaneOrientationSequence")
        measures = macro(index, "PixelMeasuresSequence")
        transform = macro(index, "PixelValueTransformationSequence")
        if count > 1 and plane is None:
            raise InputRejected(f"missing geometry: multi-frame {path.name} has no per-frame plane positions")
        position = _floats(plane if plane is not None else ds, "ImagePositionPatient", 3, path)
        cosines = _floats(orientation if orientation is not None else ds, "ImageOrientationPatient", 6, path)
        spacing = _floats(measures if measures is not None else ds, "PixelSpacing", 2, path)
        thickness = _get(measures, "SliceThickness") if measures is not None else None
        thickness = thickness if thickness not in (None, "") else _get(ds, "SliceThickness")
        source = transform if transform is not None else ds
        slope = _get(source, "RescaleSlope")
        intercept = _get(source, "RescaleIntercept")
        frames.append(
            _Frame(
                path=path,
                frame=index,
                position=position,
                orientation=cosines,
                pixel_spacing=(float(spacing[0]), float(spacing[1])),
                rows=int(rows),
                columns=int(columns),
                slope=float(slope) if slope not in (None, "") else 1.0,
                intercept=float(intercept) if intercept not in (None, "") else 0.0,
                thickness=float(thickness) if thickness not in (None, "") else None,
                sop_uid=sop_uid,
            )
        )
    return frames


def _geometry(frames: list[_Frame]) -> tuple[list[_Frame], np.ndarray, tuple[float, float, float]]:
    """Check that the frames form one regular stack; return them sorted along the normal, the LPS
    affine of the [column, row, slice] grid and its spacing."""
    sizes = sorted({(f.rows, f.columns) for f in frames})
    if len(sizes) > 1:
        raise InputRejected(
            f"inconsistent series: mixed image sizes ({listed(f'{r}x{c}' for r, c in sizes)} rows x columns)"
        )
    first = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.orientation, first.orientation, atol=1e-3):
            raise InputRejected("inconsistent series: mixed image orientations (ImageOrientationPatient differs)")
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):
            raise InputRejected("inconsistent series: mixed pixel spacing")
    row_cosines, column_cosines = first.orientation[:3], first.orientation[3:]
    if (
        abs(np.linalg.norm(row_cosines) - 1) > 1e-2
        or abs(np.linalg.norm(column_cosines) - 1) > 1e-2
        or abs(row_cosines @ column_cosines) > 1e-2
    ):
        raise InputRejected("invalid geometry: ImageOrientationPatient is not two orthogonal unit vectors")
    row_spacing, column_spacing = first.pixel_spacing
    if row_spacing <= 0 or column_spacing <= 0:
        raise InputRejected("invalid geometry: PixelSpacing is not positive")
    normal = _normal(first.orientation)
    distance = np.array([f.position @ normal for f in frames])
    order = np.argsort(distance, kind="stable")
    ordered = [frames[i] for i in order]
    distance = distance[order]
    if len(ordered) > 1:
        gaps = np.diff(distance)
        duplicates = int((gaps < 1e-2).sum())
        if duplicates:
            raise InputRejected(
                f"duplicate slice positions: {duplicates} of {len(ordered)} slices repeat another slice's position"
            )
        step = float(np.median(gaps))
        if np.abs(gaps - step).max() > max(0.02 * step, 0.01):
            raise InputRejected(
                f"slice positions are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm): a slice may be missing"
            )
        slice_spacing = float(distance[-1] - distance[0]) / (len(ordered) - 1)
        step_vector = (ordered[-1].position - ordered[0].position) / (len(ordered) - 1)  # tilt kept
    else:  # one slice: no positions to measure, so the stated thickness (or 1 mm) stands in
        slice_spacing = first.thickness if first.thickness and first.thickness > 0 else 1.0
        step_vector = normal * slice_spacing
    affine = np.eye(4)
    affine[:3, 0] = row_cosines * column_spacing
    affine[:3, 1] = column_cosines * row_spacing
    affine[:3, 2] = step_vector
    affine[:3, 3] = ordered[0].position
    return ordered, affine, (column_spacing, row_spacing, slice_spacing)


def _to_ras(
    data: np.ndarray, lps_affine: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, str, tuple[float, float, float]]:
    """Reorder a [column, row, slice] array to RAS+ (closest canonical), with its affine and codes."""
    from nibabel import orientations  # lazy: heavy import

    ras = np.eye(4)
    ras[:3, :] = _LPS_TO_RAS @ lps_affine[:3, :]
    original = "".join(orientations.aff2axcodes(ras))
    ornt = orientations.io_orientation(ras)
    reoriented = np.ascontiguousarray(orientations.apply_orientation(data, ornt))
    affine = ras @ orientations.inv_ornt_aff(ornt, data.shape)
    spacing_ras = [0.0, 0.0, 0.0]
    for axis in range(3):
        spacing_ras[int(ornt[axis, 0])] = float(spacing[axis])
    return reoriented, affine, original, (spacing_ras[0], spacing_ras[1], spacing_ras[2])


def _decode(ds, path: Path) -> np.ndarray:
    """Stored pixel values as (frames, rows, columns), through pydicom's pixel handlers."""
    from pydicom.uid import UID

    if _get(ds, "PixelData") is None:
        raise InputRejected(f"no pixel data in {path.name}")
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise InputRejected(f"colour images (SamplesPerPixel {samples}) are not read as volumes")
    rows, columns = int(_get(ds, "Rows")), int(_get(ds, "Columns"))
    count = int(_get(ds, "NumberOfFrames", 1) or 1)
    syntax = str(_get(ds.file_meta, "TransferSyntaxUID"))
    if syntax in _NATIVE_SYNTAXES:
        bits = int(_get(ds, "BitsAllocated", 0) or 0)
        expected = (rows * columns * count * bits + 7) // 8
        stored = len(_get(ds, "PixelData"))
        if stored < expected:
            raise InputRejected(f"truncated pixel data in {path.name}: {stored} of {expected} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:
        detail = error_detail(exc, path)
        if syntax in _NATIVE_SYNTAXES:
            raise InputRejected(f"unreadable pixel data in {path.name} ({detail})") from None
        raise InputRejected(f"cannot decode transfer syntax {UID(syntax).name}: {detail}") from None
    pixels = np.asarray(pixels)
    if pixels.size != rows * columns * count:
        raise InputRejected(f"pixel data of {path.name} holds {pixels.size} values, expected {rows * columns * count}")
    return pixels.reshape(count, rows, columns)


# ---------------------------------------------------------------------------------------------------
# annotations


@_rejects_malformed("SEG")
def read_seg_labels(
    seg_path: Path,
    series: DicomSeries,
    volume: Volume,
    segment_labels: dict[int, int] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """A DICOM SEG (BINARY, FRACTIONAL or LABELMAP) as labels aligned voxel for voxel with ``volume``.

    Each segment number becomes ``segment_labels[number]`` (default: the number itself); segments
    missing from a given mapping are left out; a fractional frame counts where it is at least half
    of MaximumFractionalValue. Frames are placed by their plane position, or, without one, by the
    image they were derived from (ReferencedSOPInstanceUID). Later segments overwrite earlier ones
    where they overlap."""
    seg_path = Path(seg_path)
    ds = _read_for_pixels(seg_path, limits)
    if str(_get(ds, "SOPClassUID", "")) not in SEG_CLASSES:
        raise InputRejected(f"not a DICOM SEG: {_uid_name(str(_get(ds, 'SOPClassUID', '')))}")
    series_uids, _ = _annotation_references(ds, "SEG")
    if series_uids and series.series_uid not in series_uids:
        raise InputRejected("SEG references another series than the one it is read with")
    seg_type = str(_get(ds, "SegmentationType", "BINARY")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InputRejected(f"unsupported SegmentationType {seg_type[:16]}")
    numbers = [int(_get(item, "SegmentNumber")) for item in _get(ds, "SegmentSequence", []) or []]

    def label_of(number: int) -> int | None:
        if segment_labels is None:
            return number
        return segment_labels.get(number)

    rows, columns, count, itemsize = _claimed(ds)
    limits.check_volume((columns, rows, count), itemsize, itemsize, what="SEG")
    pixels = _decode(ds, seg_path)
    geometry = _frames_of_annotation(ds, seg_path, series, limits)
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence", None) or []
    shared_items = _get(ds, "SharedFunctionalGroupsSequence", None) or []
    shared_number = _segment_number(shared_items[0]) if len(shared_items) else None
    maximum = float(_get(ds, "MaximumFractionalValue", 255) or 255)
    labels = np.zeros(volume.data.shape, dtype=np.uint32)
    inverse = np.linalg.inv(volume.affine)
    for index, frame in enumerate(geometry):
        target = _frame_view(labels, frame, inverse, f"SEG frame {index + 1}")
        values = pixels[index].T  # [column, row]
        if seg_type == "LABELMAP":  # one pass whatever the number of values (a comparison per value is quadratic)
            numbers, which = np.unique(values, return_inverse=True)
            table = np.array([(label_of(n) or 0) if n else 0 for n in numbers.tolist()], dtype=np.uint32)
            mapped = table[which.reshape(values.shape)]
            target[mapped > 0] = mapped[mapped > 0]
            continue
        number = _segment_number(per_frame[index]) if per_frame else None
        number = number if number is not None else shared_number
        if number is None:
            raise InputRejected(f"SEG frame {index + 1} names no segment number")
        if numbers and number not in numbers:
            raise InputRejected(f"SEG frame {index + 1} references segment {number}, absent from SegmentSequence")
        label = label_of(number)
        if not label:
            continue
        mask = values >= maximum / 2 if seg_type == "FRACTIONAL" else values > 0
        target[mask] = label
    return _narrow(labels)


@_rejects_malformed("RTSTRUCT")
def read_rtstruct_labels(
    rt_path: Path,
    series: DicomSeries,
    volume: Volume,
    roi_labels: dict[str, int] | None = None,
    limits: InputLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """An RTSTRUCT's closed planar contours filled on their slices, aligned voxel for voxel with ``volume``.

    Each ROI becomes ``roi_labels[ROIName]`` (default: its ROINumber); ROIs missing from a given
    mapping are left out. Contours of one ROI on one slice combine by the even-odd rule (an inner
    contour is a hole). A contour goes to the slice of the image it references, else to the slice
    its plane lies on; later ROIs overwrite earlier ones where they overlap."""
    from PIL import Image, ImageDraw  # lazy: only RTSTRUCT needs polygon filling

    rt_path = Path(rt_path)
    if not rt_path.is_file():
        raise InputRejected(f"file is missing: {rt_path.name}")
    try:
        ds = _read(rt_path, pixels=False, limits=limits)
    except InputRejected:
        raise
    except Exception as exc:
        raise InputRejected(_unreadable_reason(rt_path, exc)) from None
    if str(_get(ds, "SOPClassUID", "")) != RTSTRUCT_STORAGE:
        raise InputRejected(f"not an RTSTRUCT: {_uid_name(str(_get(ds, 'SOPClassUID', '')))}")
    series_uids, _ = _annotation_references(ds, "RTSTRUCT")
    if series_uids and series.series_uid not in series_uids:
        raise InputRejected("RTSTRUCT references another series than the one it is read with")
    names = {
        int(_get(item, "ROINumber")): str(_get(item, "ROIName", "") or "")
        for item in _get(ds, "StructureSetROISequence", []) or []
    }
    shape = volume.data.shape
    inverse = np.linalg.inv(volume.affine)
    first = _frames_of(_read(series.files[0], pixels=False, limits=limits), series.files[0])[0]
    axis = int(np.argmax(np.abs(inverse[:3, :3] @ (_LPS_TO_RAS @ _normal(first.orientation)))))
    in_plane = [a for a in range(3) if a != axis]
    instances: dict[tuple[str, int], _Frame] | None = None

    labels = np.zeros(shape, dtype=np.uint32)
    for roi in _get(ds, "ROIContourSequence", []) or []:
        number = int(_get(roi, "ReferencedROINumber"))
        label = number if roi_labels is None else roi_labels.get(names.get(number, ""))
        if not label:
            continue
        masks: dict[int, np.ndarray] = {}
        for contour in _get(roi, "ContourSequence", []) or []:
            kind = str(_get(contour, "ContourGeometricType", "")).upper()
            if kind not in ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR"):
                continue  # points and open contours enclose no area
            points = np.asarray([float(v) for v in _get(contour, "ContourData", []) or []], dtype=np.float64)
            if points.size < 9 or points.size % 3:
                raise InputRejected(f"ROI {number}: a closed contour has fewer than 3 points or malformed ContourData")
            voxels = _to_voxels(points.reshape(-1, 3), inverse)
            along = voxels[:, axis]
            if np.ptp(along) > 0.5:
                raise InputRejected(f"ROI {number}: a contour does not lie in one image plane")
            position = float(along.mean())
            references = [
                (str(_get(image, "ReferencedSOPInstanceUID")), int(_get(image, "ReferencedFrameNumber", 1) or 1))
                for image in _get(contour, "ContourImageSequence", []) or []
            ]
            if references:
                if instances is None:
                    instances = _instance_frames(series, limits)
                known = [instances[r] for r in references if r in instances]
                if known:
                    referenced = float(_to_voxels(known[0].position[None, :], inverse)[0, axis])
                    if abs(referenced - position) > 0.5:
                        raise InputRejected(f"ROI {number}: a contour's plane does not match the image it references")
                    position = referenced
            index = int(np.rint(position))
            if not (0 <= index < shape[axis]) or abs(position - index) > 0.25:
                raise InputRejected(f"ROI {number}: a contour lies outside the image volume or between its slices")
            canvas = Image.new("L", (shape[in_plane[0]], shape[in_plane[1]]), 0)
            polygon = [(float(u), float(v)) for u, v in voxels[:, in_plane]]
            ImageDraw.Draw(canvas).polygon(polygon, fill=1, outline=1)
            mask = np.asarray(canvas, dtype=bool).T  # [in_plane[0], in_plane[1]]
            masks[index] = masks[index] ^ mask if index in masks else mask
        for index, mask in masks.items():
            view = labels[tuple(index if a == axis else slice(None) for a in range(3))]
            view[mask] = label
    return _narrow(labels)


def _frames_of_annotation(ds, path: Path, series: DicomSeries, limits: InputLimits) -> list[_Frame]:
    """Each SEG frame's plane: its own position, else that of the image it was derived from."""
    count = int(_get(ds, "NumberOfFrames", 1) or 1)
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence", None) or []
    has_positions = bool(per_frame) and all(_get(group, "PlanePositionSequence") for group in per_frame)
    if has_positions or not per_frame:
        try:
            return _frames_of(ds, path)
        except InputRejected:
            if not per_frame:
                raise
    instances = _instance_frames(series, limits)
    frames = []
    for index in range(count):
        reference = None
        for derivation in _get(per_frame[index], "DerivationImageSequence", []) or []:
            for source in _get(derivation, "SourceImageSequence", []) or []:
                reference = (
                    str(_get(source, "ReferencedSOPInstanceUID")),
                    int(_get(source, "ReferencedFrameNumber", 1) or 1),
                )
        if reference is None or reference not in instances:
            raise InputRejected(f"SEG frame {index + 1} has neither a plane position nor a known source image")
        frames.append(instances[reference])
    return frames


def _instance_frames(series: DicomSeries, limits: InputLimits) -> dict[tuple[str, int], _Frame]:
    """(SOPInstanceUID, 1-based frame number) -> frame geometry, from the series' headers."""
    found = {}
    for path in series.files:
        for frame in _frames_of(_read(path, pixels=False, limits=limits), path):
            if frame.sop_uid:
                found[(frame.sop_uid, frame.frame + 1)] = frame
    return found


def _frame_view(labels: np.ndarray, frame: _Frame, inverse: np.ndarray, what: str) -> np.ndarray:
    """The view of ``labels`` that a 2D frame covers, indexed [column, row] of the frame."""
    row_cosines, column_cosines = frame.orientation[:3], frame.orientation[3:]
    row_spacing, column_spacing = frame.pixel_spacing
    origin = _to_voxels(frame.position[None, :], inverse)[0]
    along_columns = inverse[:3, :3] @ (_LPS_TO_RAS @ row_cosines * column_spacing)  # column index + 1
    along_rows = inverse[:3, :3] @ (_LPS_TO_RAS @ column_cosines * row_spacing)  # row index + 1
    axis_c, axis_r = int(np.argmax(np.abs(along_columns))), int(np.argmax(np.abs(along_rows)))
    unit_c, unit_r = np.zeros(3), np.zeros(3)
    unit_c[axis_c], unit_r[axis_r] = np.sign(along_columns[axis_c]), np.sign(along_rows[axis_r])
    rounded = np.rint(origin)
    if (
        axis_c == axis_r
        or not np.allclose(along_columns, unit_c, atol=1e-2)
        or not np.allclose(along_rows, unit_r, atol=1e-2)
        or np.abs(origin - rounded).max() > 0.1
    ):
        raise InputRejected(f"{what} does not lie on the image grid (other orientation, spacing or offset)")
    slicer: list = [int(rounded[a]) for a in range(3)]
    for axis, unit, length in ((axis_c, unit_c, frame.columns), (axis_r, unit_r, frame.rows)):
        start, step = int(rounded[axis]), int(unit[axis])
        last = start + step * (length - 1)
        if min(start, last) < 0 or max(start, last) >= labels.shape[axis]:
            raise InputRejected(f"{what} lies outside the image volume")
        stop = last + step
        slicer[axis] = slice(start, stop if stop >= 0 else None, step)
    fixed = 3 - axis_c - axis_r
    if not 0 <= slicer[fixed] < labels.shape[fixed]:
        raise InputRejected(f"{what} lies outside the image volume")
    view = labels[tuple(slicer)]  # axes in ascending volume order: transpose when rows come first
    return view if axis_c < axis_r else view.T


def _to_voxels(points_lps: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    ras = points_lps @ _LPS_TO_RAS.T
    return ras @ inverse[:3, :3].T + inverse[:3, 3]


def _segment_number(group) -> int | None:
    items = _get(group, "SegmentIdentificationSequence") if group is not None else None
    if items and _get(items[0], "ReferencedSegmentNumber") is not None:
        return int(_get(items[0], "ReferencedSegmentNumber"))
    return None


def _narrow(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.uint16) if labels.max(initial=0) <= np.iinfo(np.uint16).max else labels


# ---------------------------------------------------------------------------------------------------
# helpers


@functools.cache
def _tags() -> list:
    from pydicom.tag import Tag

    return [Tag(keyword) for keyword in _TOP_LEVEL]


def _read(path: Path, *, pixels: bool, limits: InputLimits = DEFAULT_LIMITS):
    import pydicom  # lazy: heavy import

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; we validate what we use
        _check_inflated_size(path, limits)
        return pydicom.dcmread(path, stop_before_pixels=not pixels, specific_tags=_tags())


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
    if str(_get(meta, "TransferSyntaxUID", "")) != _DEFLATED_SYNTAX:
        return
    group_length = _get(meta, "FileMetaInformationGroupLength")
    if group_length is None:
        raise InputRejected(f"deflated DICOM without a file meta group length: {path.name}")
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
                        f"deflated DICOM too large: {path.name} inflates to more than the {limits.max_decoded_mb} MiB "
                        "allowed (MEDTRINITY_MAX_DECODED_MB)"
                    )
                deflated = inflater.unconsumed_tail


def _claimed(ds) -> tuple[int, int, int, int]:
    """(rows, columns, frames, bytes per pixel) as the header claims them, to check before decoding; pydicom
    unpacks 1-bit pixels (SEG) to a byte each."""
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    bits = int(_get(ds, "BitsAllocated", 8) or 8)
    frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    return int(_get(ds, "Rows", 0) or 0), int(_get(ds, "Columns", 0) or 0), frames, samples * ((bits + 7) // 8)


def _get(ds, keyword: str, default=None):
    """A value by keyword, for allowed keywords only: the one door through which values leave a dataset."""
    if keyword not in _ALLOWED:
        raise KeyError(f"{keyword} is not in ALLOWED_ATTRIBUTES")
    if ds is None:
        return default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values convert on first access; malformed ones fail where they are used
        return getattr(ds, keyword, default)


def _floats(ds, keyword: str, count: int, path: Path) -> np.ndarray:
    value = _get(ds, keyword)
    try:
        values = np.array([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (count,) or not np.isfinite(values).all():
        raise InputRejected(f"missing geometry: {path.name} has no valid {keyword}")
    return values


def _normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / (np.linalg.norm(normal) or 1.0)


def _uid_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"
