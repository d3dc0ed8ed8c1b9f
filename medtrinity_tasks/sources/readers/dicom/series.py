"""DICOM series: grouping files into series from their headers, and a series read as one RAS+ ``Volume``.

``scan`` reads headers only and groups image files into series (by SeriesInstanceUID), attaching DICOM
SEG and RTSTRUCT files to the series they reference; files that cannot be used come back as rejects
with a reason. ``read_series`` sorts a series' slices (or a multi-frame image's frames) along the
slice normal, takes the slice spacing from the positions, applies the modality rescale, inverts
MONOCHROME1, decodes compressed transfer syntaxes through pydicom's pixel handlers and returns the
same ``Volume`` as the NIfTI reader: ``data[x, y, z]`` in RAS+ order. What a series' files claim
(Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated, summed over its files) is checked
against ``InputLimits`` before their pixels are decoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.reasons import Reason
from medtrinity_tasks.sources.readers.base import Volume
from medtrinity_tasks.sources.readers.dicom.geometry import Frame, frames_of, slice_normal, stack_geometry, to_ras
from medtrinity_tasks.sources.readers.dicom.header import (
    MALFORMED,
    RTSTRUCT_STORAGE,
    SEG_CLASSES,
    attribute,
    floats,
    read_with_pixels,
    rejects_malformed,
    scan_header,
)
from medtrinity_tasks.sources.readers.dicom.pixels import claimed_size, decode, monochrome1_top
from medtrinity_tasks.sources.readers.dicom.planar import is_planar
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, FLOAT32_BYTES, InputLimits

SERIES_CHANGED = Reason.of("the series' files no longer form one series", "the source changed after listing")
"""Why a series whose files changed between the listing and the read is rejected."""


@dataclass(frozen=True)
class DicomSeries:
    """One input found by ``scan``: an image series (or one stack of it) with the annotation files that reference
    it, or a single 2D object."""

    series_uid: str
    """SeriesInstanceUID ("" where a 2D object has none), for grouping only: never written to a record."""
    modality: str
    files: tuple[Path, ...]
    """Image files, sorted along the slice normal (by path when the headers lack geometry)."""
    segs: tuple[Path, ...] = ()
    rtstructs: tuple[Path, ...] = ()
    body_part: str | None = None
    """BodyPartExamined as the header spells it (a code string such as CHEST), for ``body_region``."""
    planar: bool = False
    """A 2D object (``planar.read_planar``), not a stack of slices."""
    key: str = ""
    """What a stack's pseudonym is made of: the series UID, with the stack's number where a series holds several
    stacks ("" for a 2D object, which the listing names by its path)."""


def scan(paths: list[Path], limits: InputLimits = DEFAULT_LIMITS) -> tuple[list[DicomSeries], dict[Path, Reason]]:
    """Group DICOM files into inputs from their headers; return the inputs and the rejects.

    A series' slices are one input per stack (files of one size and orientation: localizers and reformats that
    share a series UID are stacks of their own; the series' SEG and RTSTRUCT files go with its largest stack);
    each 2D object (``planar.is_planar``) is an input of its own; a
    file repeating another's SOPInstanceUID (the same image exported twice, in another transfer syntax) is
    rejected as a duplicate. Inputs come back sorted by their first file's path; SEG and RTSTRUCT files are
    attached to the series they reference, or rejected when that series is not among ``paths``."""
    rejects: dict[Path, Reason] = {}
    images: dict[str, list[tuple[Path, object]]] = {}
    annotations: list[tuple[Path, object, str]] = []
    seen: dict[str, Path] = {}
    for path in sorted(paths, key=str):
        header, reason = scan_header(Path(path), limits)
        if reason is not None:
            rejects[path] = reason
            continue
        instance = str(attribute(header, "SOPInstanceUID", "") or "")
        if instance in seen:
            rejects[path] = Reason.of("duplicate instance", f"{seen[instance].name} holds the same SOPInstanceUID")
            continue
        seen[instance] = path
        sop_class = str(attribute(header, "SOPClassUID", ""))
        if sop_class in (*SEG_CLASSES, RTSTRUCT_STORAGE):
            annotations.append((path, header, sop_class))
            continue
        images.setdefault(str(attribute(header, "SeriesInstanceUID", "") or ""), []).append((path, header))
    segs, rtstructs = _attach_annotations(annotations, images, rejects)
    series = []
    for uid, members in images.items():
        inputs = [
            _series_of(uid, key, stack[0][1], tuple(_sorted_paths(stack)), planar=not key)
            for key, stack in _inputs_of(uid, members)
        ]
        annotated = tuple(sorted(segs.get(uid, []))), tuple(sorted(rtstructs.get(uid, [])))
        stacks = [found for found in inputs if not found.planar]
        if not stacks:
            for path in (*annotated[0], *annotated[1]):
                rejects[path] = Reason.of(
                    "annotation of 2D objects", "SEG and RTSTRUCT are read for stacks of slices only"
                )
        main = max(stacks, key=lambda found: len(found.files), default=None)  # the annotated acquisition
        series += [
            replace(found, segs=annotated[0], rtstructs=annotated[1]) if found is main else found for found in inputs
        ]
    series.sort(key=lambda s: str(min(s.files)))
    return series, rejects


def _inputs_of(uid: str, members: list[tuple[Path, object]]) -> list[tuple[str, list[tuple[Path, object]]]]:
    """(key, files) of each input a series' files form: each 2D object alone (the listing names it by its path);
    slices in one stack per size and orientation, keyed by the series UID (numbered when there are several)."""
    planar, stacks = [], {}
    for path, header in members:
        if not uid or _is_planar(header, path):
            planar.append((path, header))
        else:
            stacks.setdefault(_stack_of(header), []).append((path, header))
    inputs = [("", [(path, header)]) for path, header in planar]
    split = [part for stack in stacks.values() for part in _split_repeats(stack)]
    ordered = sorted(split, key=lambda stack: str(stack[0][0]))
    inputs += [(uid if len(ordered) == 1 else f"{uid}#{n}", stack) for n, stack in enumerate(ordered)]
    return inputs


def _split_repeats(stack: list[tuple[Path, object]]) -> list[list[tuple[Path, object]]]:
    """Slices that repeat positions (echoes, phases or repeated acquisitions in one series): one stack per
    repetition, in path order, where every position repeats equally often; otherwise the stack as it is (reading
    it then says what is wrong)."""
    positions = []
    for _, header in stack:
        value = attribute(header, "ImagePositionPatient")
        try:
            positions.append(tuple(round(float(v), 1) for v in value) if value is not None else None)
        except (TypeError, ValueError):
            positions.append(None)
    repeats = set(Counter(positions).values())
    if None in positions or len(repeats) != 1 or repeats == {1}:
        return [stack]
    parts: dict[int, list[tuple[Path, object]]] = {}
    seen: Counter = Counter()
    for member, position in zip(stack, positions, strict=True):
        parts.setdefault(seen[position], []).append(member)
        seen[position] += 1
    return [parts[n] for n in sorted(parts)]


def _is_planar(header, path: Path) -> bool:
    return is_planar(header, path, str(attribute(header, "Modality", "") or "").strip().upper())


def _stack_of(header) -> tuple:
    """What slices of one stack share: their size and (rounded) orientation."""
    orientation = attribute(header, "ImageOrientationPatient")
    try:
        cosines = tuple(round(float(v), 2) for v in orientation) if orientation is not None else ()
    except (TypeError, ValueError):
        cosines = ()
    return str(attribute(header, "Rows", "")), str(attribute(header, "Columns", "")), cosines


def _attach_annotations(annotations, images, rejects) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """SEG and RTSTRUCT files by the series UID they reference; the others are rejected with the reason."""
    instance_series = {
        str(attribute(header, "SOPInstanceUID")): uid
        for uid, members in images.items()
        for _, header in members
        if attribute(header, "SOPInstanceUID") and uid
    }
    segs: dict[str, list[Path]] = {}
    rtstructs: dict[str, list[Path]] = {}
    for path, header, sop_class in annotations:
        kind = "SEG" if sop_class in SEG_CLASSES else "RTSTRUCT"
        series_uids, instance_uids = annotation_references(header, kind)
        referenced = {uid for uid in series_uids if uid in images and uid}
        referenced |= {instance_series[uid] for uid in instance_uids if uid in instance_series}
        if not series_uids and not instance_uids:
            rejects[path] = Reason.of(f"{kind} names no referenced series or image")
        elif not referenced:
            rejects[path] = Reason.of(f"{kind} references a series that is not in the source")
        else:
            for uid in sorted(referenced):
                (segs if kind == "SEG" else rtstructs).setdefault(uid, []).append(path)
    return segs, rtstructs


def _series_of(uid: str, key: str, header, files, segs=(), rtstructs=(), *, planar: bool) -> DicomSeries:
    """An input from the header of one of its files."""
    modality = str(attribute(header, "Modality", "") or "").strip().upper()
    body_part = str(attribute(header, "BodyPartExamined", "") or "").strip() or None
    return DicomSeries(
        series_uid=uid,
        modality=modality,
        files=files,
        segs=segs,
        rtstructs=rtstructs,
        body_part=body_part,
        planar=planar,
        key=key,
    )


def annotation_references(header, kind: str) -> tuple[set[str], set[str]]:
    """(series UIDs, SOP instance UIDs) that a SEG or an RTSTRUCT references."""
    series_uids: set[str] = set()
    instance_uids: set[str] = set()
    if kind == "SEG":
        for item in attribute(header, "ReferencedSeriesSequence", []) or []:
            if attribute(item, "SeriesInstanceUID"):
                series_uids.add(str(attribute(item, "SeriesInstanceUID")))
            for instance in attribute(item, "ReferencedInstanceSequence", []) or []:
                instance_uids.add(str(attribute(instance, "ReferencedSOPInstanceUID")))
        if series_uids:  # the per-frame references are one item per frame: parse them only when needed
            return series_uids, instance_uids
        for group in attribute(header, "PerFrameFunctionalGroupsSequence", []) or []:
            for derivation in attribute(group, "DerivationImageSequence", []) or []:
                for source in attribute(derivation, "SourceImageSequence", []) or []:
                    instance_uids.add(str(attribute(source, "ReferencedSOPInstanceUID")))
    else:
        for frame_of_reference in attribute(header, "ReferencedFrameOfReferenceSequence", []) or []:
            for study in attribute(frame_of_reference, "RTReferencedStudySequence", []) or []:
                for item in attribute(study, "RTReferencedSeriesSequence", []) or []:
                    if attribute(item, "SeriesInstanceUID"):
                        series_uids.add(str(attribute(item, "SeriesInstanceUID")))
                    for image in attribute(item, "ContourImageSequence", []) or []:
                        instance_uids.add(str(attribute(image, "ReferencedSOPInstanceUID")))
        for roi in attribute(header, "ROIContourSequence", []) or []:
            for contour in attribute(roi, "ContourSequence", []) or []:
                for image in attribute(contour, "ContourImageSequence", []) or []:
                    instance_uids.add(str(attribute(image, "ReferencedSOPInstanceUID")))
    return series_uids, instance_uids


def _sorted_paths(members: list[tuple[Path, object]]) -> list[Path]:
    """Files along the slice normal of the first file; by path when geometry is missing."""
    members = sorted(members, key=lambda m: str(m[0]))
    try:
        planes = [_first_plane(header, path) for path, header in members]
    except (InputRejected, *MALFORMED):  # read_series says what is missing
        return [path for path, _ in members]
    normal = slice_normal(planes[0][1])
    keyed = sorted(zip(planes, members, strict=True), key=lambda pm: (float(pm[0][0] @ normal), str(pm[1][0])))
    return [member[0] for _, member in keyed]


def _first_plane(header, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Position and orientation of a file's first frame: from the top level of a single-frame image
    (two values, cheap), from the functional groups of a multi-frame one."""
    position, orientation = attribute(header, "ImagePositionPatient"), attribute(header, "ImageOrientationPatient")
    if position is not None and orientation is not None:
        return floats(header, "ImagePositionPatient", 3, path), floats(header, "ImageOrientationPatient", 6, path)
    frame = frames_of(header, path)[0]
    return frame.position, frame.orientation


def known_series(files: list[Path], annotations: list[Path], limits: InputLimits = DEFAULT_LIMITS) -> DicomSeries:
    """A series that an earlier ``scan`` grouped (``files`` in slice order) with its SEG and
    RTSTRUCT files, rebuilt from one header each instead of scanning it again; ``read_series``
    checks that every file still belongs to it."""
    header, reason = scan_header(files[0], limits) if files else (None, Reason.of("no files"))
    if reason is not None:
        raise InputRejected(SERIES_CHANGED.kind, text=SERIES_CHANGED.text)
    segs, rtstructs = [], []
    for path in annotations:
        annotation, reason = scan_header(path, limits)
        sop_class = str(attribute(annotation, "SOPClassUID", "") or "") if reason is None else ""
        if sop_class not in (*SEG_CLASSES, RTSTRUCT_STORAGE):
            raise InputRejected(SERIES_CHANGED.kind, text=SERIES_CHANGED.text)
        (segs if sop_class in SEG_CLASSES else rtstructs).append(path)
    uid = str(attribute(header, "SeriesInstanceUID", "") or "")
    planar = not uid or _is_planar(header, files[0])
    return _series_of(uid, uid, header, tuple(files), tuple(segs), tuple(rtstructs), planar=planar)


@rejects_malformed("image header")
def read_series(series: DicomSeries, limits: InputLimits = DEFAULT_LIMITS) -> Volume:
    """The series as a float32 RAS+ ``Volume`` in modality units (e.g. HU for CT).

    Each file is decoded as soon as it is read, once the voxels its headers and those before it
    claim fit ``limits``: so the series never holds more than one file's raw data besides the
    pixels it may hold. Raises ``InputRejected`` for an inconsistent series, missing geometry,
    duplicate or unevenly spaced positions, truncated pixel data, a transfer syntax that cannot be
    decoded or a series larger than ``limits``."""
    if not series.files:
        raise InputRejected("series holds no image files")
    frames: list[Frame] = []
    decoded = []  # per file: its path, stored values and MONOCHROME1 top
    sizes: set[tuple[int, int]] = set()
    voxels = itemsize = 0
    for path in series.files:
        ds = read_with_pixels(path, limits)
        if str(attribute(ds, "SeriesInstanceUID", "")) != series.series_uid:
            raise InputRejected(SERIES_CHANGED.kind, text=SERIES_CHANGED.text)
        frames.extend(frames_of(ds, path))
        rows, columns, count, bytes_per_pixel = claimed_size(ds)
        sizes.add((rows, columns))
        voxels += rows * columns * count
        itemsize = max(itemsize, bytes_per_pixel)
        # the peak is the stored values with the float32 volume, or that volume with its RAS+ copy
        limits.check_volume(
            (columns, rows, len(frames)) if len(sizes) == 1 else (voxels,),
            itemsize,
            max(itemsize, FLOAT32_BYTES) + FLOAT32_BYTES,
        )
        decoded.append((path, decode(ds, path), monochrome1_top(ds)))
    ordered, lps_affine, spacing = stack_geometry(frames)

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
    data, affine, original, spacing_ras = to_ras(data, lps_affine, spacing)
    return Volume(data=data, spacing_mm=spacing_ras, affine=affine, original_orientation=original)
