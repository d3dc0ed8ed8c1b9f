"""DICOM SEG and RTSTRUCT to label volumes aligned voxel for voxel with the ``Volume`` of the series they annotate."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.base import Volume
from medtrinity_tasks.sources.readers.dicom.geometry import LPS_TO_RAS, Frame, frames_of, slice_normal, to_voxels
from medtrinity_tasks.sources.readers.dicom.header import (
    RTSTRUCT_STORAGE,
    SEG_CLASSES,
    attribute,
    open_dataset,
    read_dataset,
    read_with_pixels,
    rejects_malformed,
    uid_name,
)
from medtrinity_tasks.sources.readers.dicom.pixels import claimed_size, decode
from medtrinity_tasks.sources.readers.dicom.series import DicomSeries, annotation_references
from medtrinity_tasks.sources.readers.limits import DEFAULT_LIMITS, InputLimits

CLOSED_CONTOURS = ("CLOSED_PLANAR", "CLOSEDPLANAR_XOR")
"""The contour types that enclose an area: points and open contours are left out."""


@rejects_malformed("SEG")
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
    ds, seg_type, numbers = _seg_dataset(seg_path, series, limits)

    def label_of(number: int) -> int | None:
        return number if segment_labels is None else segment_labels.get(number)

    rows, columns, count, itemsize = claimed_size(ds)
    limits.check_volume((columns, rows, count), itemsize, itemsize, what="SEG")
    pixels = decode(ds, seg_path)
    geometry = _frames_of_annotation(ds, seg_path, series, limits)
    segment_of = _frame_segments(ds, numbers)
    maximum = float(attribute(ds, "MaximumFractionalValue", 255) or 255)
    labels = np.zeros(volume.data.shape, dtype=np.uint32)
    inverse = np.linalg.inv(volume.affine)
    for index, frame in enumerate(geometry):
        target = _frame_view(labels, frame, inverse, f"SEG frame {index + 1}")
        values = pixels[index].T  # [column, row]
        if seg_type == "LABELMAP":
            _paint_label_map(target, values, label_of)
            continue
        label = label_of(segment_of(index))
        if label:
            target[values >= maximum / 2 if seg_type == "FRACTIONAL" else values > 0] = label
    return _narrow(labels)


def _seg_dataset(seg_path: Path, series: DicomSeries, limits: InputLimits) -> tuple[object, str, list[int]]:
    """The SEG's dataset, pixels included, once it is known to be a SEG of ``series`` of a type read here; with its
    SegmentationType and the segment numbers its SegmentSequence defines."""
    ds = read_with_pixels(seg_path, limits)
    if str(attribute(ds, "SOPClassUID", "")) not in SEG_CLASSES:
        raise InputRejected("not a DICOM SEG", uid_name(str(attribute(ds, "SOPClassUID", ""))))
    series_uids, _ = annotation_references(ds, "SEG")
    if series_uids and series.series_uid not in series_uids:
        raise InputRejected("SEG references another series than the one it is read with")
    seg_type = str(attribute(ds, "SegmentationType", "BINARY")).upper()
    if seg_type not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise InputRejected("unsupported SegmentationType", text=f"unsupported SegmentationType {seg_type[:16]}")
    numbers = [int(attribute(item, "SegmentNumber")) for item in attribute(ds, "SegmentSequence", []) or []]
    return ds, seg_type, numbers


def _frame_segments(ds, numbers: list[int]) -> Callable[[int], int]:
    """The segment number of each frame of a BINARY or FRACTIONAL SEG: its own, else the shared one; refused when
    it names none or one that SegmentSequence does not define."""
    per_frame = attribute(ds, "PerFrameFunctionalGroupsSequence", None) or []
    shared_items = attribute(ds, "SharedFunctionalGroupsSequence", None) or []
    shared_number = _segment_number(shared_items[0]) if len(shared_items) else None

    def segment_of(index: int) -> int:
        number = _segment_number(per_frame[index]) if per_frame else None
        number = number if number is not None else shared_number
        if number is None:
            raise InputRejected(f"SEG frame {index + 1} names no segment number")
        if numbers and number not in numbers:
            raise InputRejected(f"SEG frame {index + 1} references segment {number}, absent from SegmentSequence")
        return number

    return segment_of


def _paint_label_map(target: np.ndarray, values: np.ndarray, label_of: Callable[[int], int | None]) -> None:
    """A LABELMAP frame's values as labels, in one pass whatever the number of values (a comparison per value is
    quadratic)."""
    numbers, which = np.unique(values, return_inverse=True)
    table = np.array([(label_of(n) or 0) if n else 0 for n in numbers.tolist()], dtype=np.uint32)
    mapped = table[which.reshape(values.shape)]
    target[mapped > 0] = mapped[mapped > 0]


@rejects_malformed("RTSTRUCT")
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
    ds = _rtstruct_dataset(Path(rt_path), series, limits)
    names = {
        int(attribute(item, "ROINumber")): str(attribute(item, "ROIName", "") or "")
        for item in attribute(ds, "StructureSetROISequence", []) or []
    }
    planes = _contour_planes(series, volume, limits)
    labels = np.zeros(planes.shape, dtype=np.uint32)
    for roi in attribute(ds, "ROIContourSequence", []) or []:
        number = int(attribute(roi, "ReferencedROINumber"))
        label = number if roi_labels is None else roi_labels.get(names.get(number, ""))
        if not label:
            continue
        for index, mask in _roi_masks(roi, number, planes).items():
            view = labels[tuple(index if a == planes.axis else slice(None) for a in range(3))]
            view[mask] = label
    return _narrow(labels)


def _rtstruct_dataset(rt_path: Path, series: DicomSeries, limits: InputLimits):
    """The RTSTRUCT's header, once it is known to be an RTSTRUCT that does not reference another series."""
    ds = open_dataset(rt_path, pixels=False, limits=limits)
    if str(attribute(ds, "SOPClassUID", "")) != RTSTRUCT_STORAGE:
        raise InputRejected("not an RTSTRUCT", uid_name(str(attribute(ds, "SOPClassUID", ""))))
    series_uids, _ = annotation_references(ds, "RTSTRUCT")
    if series_uids and series.series_uid not in series_uids:
        raise InputRejected("RTSTRUCT references another series than the one it is read with")
    return ds


@dataclass(frozen=True)
class _ContourPlanes:
    """Where an RTSTRUCT's contours land: the volume's voxel grid, the axis its series' slices cut, and the frames
    of the series' images (read once, when a contour first references one)."""

    shape: tuple[int, ...]
    inverse: np.ndarray
    """World (RAS mm) to voxel indices."""
    axis: int
    instances: Callable[[], dict[tuple[str, int], Frame]]

    @property
    def in_plane(self) -> list[int]:
        return [a for a in range(3) if a != self.axis]


def _contour_planes(series: DicomSeries, volume: Volume, limits: InputLimits) -> _ContourPlanes:
    inverse = np.linalg.inv(volume.affine)
    first = frames_of(read_dataset(series.files[0], pixels=False, limits=limits), series.files[0])[0]
    axis = int(np.argmax(np.abs(inverse[:3, :3] @ (LPS_TO_RAS @ slice_normal(first.orientation)))))
    instances = functools.cache(lambda: _instance_frames(series, limits))
    return _ContourPlanes(shape=volume.data.shape, inverse=inverse, axis=axis, instances=instances)


def _roi_masks(roi, number: int, planes: _ContourPlanes) -> dict[int, np.ndarray]:
    """One ROI's closed contours filled, per slice index; contours on one slice combine by the even-odd rule."""
    masks: dict[int, np.ndarray] = {}
    for contour in attribute(roi, "ContourSequence", []) or []:
        if str(attribute(contour, "ContourGeometricType", "")).upper() not in CLOSED_CONTOURS:
            continue
        voxels, index = _contour_on_slice(contour, number, planes)
        mask = _filled(voxels, planes)
        masks[index] = masks[index] ^ mask if index in masks else mask
    return masks


def _contour_on_slice(contour, number: int, planes: _ContourPlanes) -> tuple[np.ndarray, int]:
    """A contour's points in voxel coordinates and the slice it lies on; refused when it is no polygon, does not lie
    in one plane, or lies outside the volume or between its slices."""
    points = np.asarray([float(v) for v in attribute(contour, "ContourData", []) or []], dtype=np.float64)
    if points.size < 9 or points.size % 3:
        raise InputRejected(f"ROI {number}", "a closed contour has fewer than 3 points or malformed ContourData")
    voxels = to_voxels(points.reshape(-1, 3), planes.inverse)
    along = voxels[:, planes.axis]
    if np.ptp(along) > 0.5:
        raise InputRejected(f"ROI {number}", "a contour does not lie in one image plane")
    position = _referenced_position(contour, number, float(along.mean()), planes)
    index = int(np.rint(position))
    if not (0 <= index < planes.shape[planes.axis]) or abs(position - index) > 0.25:
        raise InputRejected(f"ROI {number}", "a contour lies outside the image volume or between its slices")
    return voxels, index


def _referenced_position(contour, number: int, position: float, planes: _ContourPlanes) -> float:
    """The slice position of the image a contour references, where the series holds it (it must match the contour's
    own plane), else the contour's own ``position``."""
    references = [
        (str(attribute(image, "ReferencedSOPInstanceUID")), int(attribute(image, "ReferencedFrameNumber", 1) or 1))
        for image in attribute(contour, "ContourImageSequence", []) or []
    ]
    if not references:
        return position
    instances = planes.instances()
    known = [instances[r] for r in references if r in instances]
    if not known:
        return position
    referenced = float(to_voxels(known[0].position[None, :], planes.inverse)[0, planes.axis])
    if abs(referenced - position) > 0.5:
        raise InputRejected(f"ROI {number}", "a contour's plane does not match the image it references")
    return referenced


def _filled(voxels: np.ndarray, planes: _ContourPlanes) -> np.ndarray:
    """A polygon filled on its slice, indexed along the two in-plane axes in volume order."""
    from PIL import Image, ImageDraw  # lazy: only RTSTRUCT needs polygon filling

    first, second = planes.in_plane
    canvas = Image.new("L", (planes.shape[first], planes.shape[second]), 0)
    polygon = [(float(u), float(v)) for u, v in voxels[:, planes.in_plane]]
    ImageDraw.Draw(canvas).polygon(polygon, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool).T  # [in_plane[0], in_plane[1]]


def _frames_of_annotation(ds, path: Path, series: DicomSeries, limits: InputLimits) -> list[Frame]:
    """Each SEG frame's plane: its own position, else that of the image it was derived from."""
    count = int(attribute(ds, "NumberOfFrames", 1) or 1)
    per_frame = attribute(ds, "PerFrameFunctionalGroupsSequence", None) or []
    has_positions = bool(per_frame) and all(attribute(group, "PlanePositionSequence") for group in per_frame)
    if has_positions or not per_frame:
        try:
            return frames_of(ds, path)
        except InputRejected:
            if not per_frame:
                raise
    instances = _instance_frames(series, limits)
    frames = []
    for index in range(count):
        reference = None
        for derivation in attribute(per_frame[index], "DerivationImageSequence", []) or []:
            for source in attribute(derivation, "SourceImageSequence", []) or []:
                reference = (
                    str(attribute(source, "ReferencedSOPInstanceUID")),
                    int(attribute(source, "ReferencedFrameNumber", 1) or 1),
                )
        if reference is None or reference not in instances:
            raise InputRejected(f"SEG frame {index + 1} has neither a plane position nor a known source image")
        frames.append(instances[reference])
    return frames


def _instance_frames(series: DicomSeries, limits: InputLimits) -> dict[tuple[str, int], Frame]:
    """(SOPInstanceUID, 1-based frame number) -> frame geometry, from the series' headers."""
    found = {}
    for path in series.files:
        for frame in frames_of(read_dataset(path, pixels=False, limits=limits), path):
            if frame.sop_uid:
                found[(frame.sop_uid, frame.frame + 1)] = frame
    return found


def _frame_view(labels: np.ndarray, frame: Frame, inverse: np.ndarray, what: str) -> np.ndarray:
    """The view of ``labels`` that a 2D frame covers, indexed [column, row] of the frame."""
    row_cosines, column_cosines = frame.orientation[:3], frame.orientation[3:]
    row_spacing, column_spacing = frame.pixel_spacing
    origin = to_voxels(frame.position[None, :], inverse)[0]
    along_columns = inverse[:3, :3] @ (LPS_TO_RAS @ row_cosines * column_spacing)  # column index + 1
    along_rows = inverse[:3, :3] @ (LPS_TO_RAS @ column_cosines * row_spacing)  # row index + 1
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


def _segment_number(group) -> int | None:
    items = attribute(group, "SegmentIdentificationSequence") if group is not None else None
    if items and attribute(items[0], "ReferencedSegmentNumber") is not None:
        return int(attribute(items[0], "ReferencedSegmentNumber"))
    return None


def _narrow(labels: np.ndarray) -> np.ndarray:
    return labels.astype(np.uint16) if labels.max(initial=0) <= np.iinfo(np.uint16).max else labels
