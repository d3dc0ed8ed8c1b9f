"""Where DICOM frames lie: each frame's plane from its headers, a stack of frames as one regular grid, and that
grid reordered to RAS+.

Patient coordinates in DICOM are LPS (x to the patient's left, y posterior, z superior); a voxel's
position is ``ImagePositionPatient + column * PixelSpacing[1] * row_cosines + row *
PixelSpacing[0] * column_cosines``. The stored grid is indexed [column, row, slice] with slices
sorted along the normal (row_cosines x column_cosines), flipped to RAS and reordered to the closest
canonical (RAS+) orientation with ``nibabel.orientations``, as ``nibabel.as_closest_canonical``
does for NIfTI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.dicom.header import MALFORMED, attribute, floats
from medtrinity_tasks.sources.readers.limits import listed

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Frame:
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


def frames_of(ds, path: Path) -> list[Frame]:
    """The geometry of every frame in a file: top-level for single-frame images, functional groups
    (per-frame first, then shared) for enhanced multi-frame images."""
    try:
        return _frames_in(ds, path)
    except MALFORMED as exc:
        raise InputRejected(
            "malformed geometry or pixel description in file",
            text=f"malformed geometry or pixel description in {path.name} ({type(exc).__name__})",
        ) from None


def _frames_in(ds, path: Path) -> list[Frame]:
    rows, columns = attribute(ds, "Rows"), attribute(ds, "Columns")
    if rows is None or columns is None:
        raise InputRejected("missing geometry", f"{path.name} has no Rows/Columns")
    count = int(attribute(ds, "NumberOfFrames", 1) or 1)
    per_frame = attribute(ds, "PerFrameFunctionalGroupsSequence", None) or []
    shared_items = attribute(ds, "SharedFunctionalGroupsSequence", None) or []
    shared = shared_items[0] if len(shared_items) else None
    if per_frame and len(per_frame) != count:
        raise InputRejected(
            f"file has {count} frames but {len(per_frame)} per-frame functional groups",
            text=f"{path.name} has {count} frames but {len(per_frame)} per-frame functional groups",
        )

    def macro(index: int, keyword: str):
        for group in (per_frame[index] if per_frame else None, shared):
            items = attribute(group, keyword) if group is not None else None
            if items:
                return items[0]
        return None

    sop_uid = str(attribute(ds, "SOPInstanceUID")) if attribute(ds, "SOPInstanceUID") else None
    frames = []
    for index in range(count):
        plane = macro(index, "PlanePositionSequence")
        orientation = macro(index, "PlaneOrientationSequence")
        measures = macro(index, "PixelMeasuresSequence")
        transform = macro(index, "PixelValueTransformationSequence")
        if count > 1 and plane is None:
            raise InputRejected("missing geometry", f"multi-frame {path.name} has no per-frame plane positions")
        position = floats(plane if plane is not None else ds, "ImagePositionPatient", 3, path)
        cosines = floats(orientation if orientation is not None else ds, "ImageOrientationPatient", 6, path)
        spacing = floats(measures if measures is not None else ds, "PixelSpacing", 2, path)
        thickness = attribute(measures, "SliceThickness") if measures is not None else None
        thickness = thickness if thickness not in (None, "") else attribute(ds, "SliceThickness")
        source = transform if transform is not None else ds
        slope = attribute(source, "RescaleSlope")
        intercept = attribute(source, "RescaleIntercept")
        frames.append(
            Frame(
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


def stack_geometry(frames: list[Frame]) -> tuple[list[Frame], np.ndarray, tuple[float, float, float]]:
    """Check that the frames form one regular stack; return them sorted along the normal, the LPS
    affine of the [column, row, slice] grid and its spacing."""
    sizes = sorted({(f.rows, f.columns) for f in frames})
    if len(sizes) > 1:
        raise InputRejected(
            "inconsistent series", f"mixed image sizes ({listed(f'{r}x{c}' for r, c in sizes)} rows x columns)"
        )
    first = frames[0]
    for f in frames[1:]:
        if not np.allclose(f.orientation, first.orientation, atol=1e-3):
            raise InputRejected("inconsistent series", "mixed image orientations (ImageOrientationPatient differs)")
        if not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):
            raise InputRejected("inconsistent series", "mixed pixel spacing")
    row_cosines, column_cosines = first.orientation[:3], first.orientation[3:]
    if (
        abs(np.linalg.norm(row_cosines) - 1) > 1e-2
        or abs(np.linalg.norm(column_cosines) - 1) > 1e-2
        or abs(row_cosines @ column_cosines) > 1e-2
    ):
        raise InputRejected("invalid geometry", "ImageOrientationPatient is not two orthogonal unit vectors")
    row_spacing, column_spacing = first.pixel_spacing
    if row_spacing <= 0 or column_spacing <= 0:
        raise InputRejected("invalid geometry", "PixelSpacing is not positive")
    normal = slice_normal(first.orientation)
    distance = np.array([f.position @ normal for f in frames])
    order = np.argsort(distance, kind="stable")
    ordered = [frames[i] for i in order]
    distance = distance[order]
    if len(ordered) > 1:
        gaps = np.diff(distance)
        duplicates = int((gaps < 1e-2).sum())
        if duplicates:
            raise InputRejected(
                "duplicate slice positions", f"{duplicates} of {len(ordered)} slices repeat another slice's position"
            )
        step = float(np.median(gaps))
        if np.abs(gaps - step).max() > max(0.02 * step, 0.01):
            raise InputRejected(
                "slice positions are unevenly spaced",
                f"{gaps.min():.3g} to {gaps.max():.3g} mm apart; a slice may be missing",
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


def to_ras(
    data: np.ndarray, lps_affine: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, str, tuple[float, float, float]]:
    """Reorder a [column, row, slice] array to RAS+ (closest canonical), with its affine and codes."""
    from nibabel import orientations  # lazy: heavy import

    ras = np.eye(4)
    ras[:3, :] = LPS_TO_RAS @ lps_affine[:3, :]
    original = "".join(orientations.aff2axcodes(ras))
    ornt = orientations.io_orientation(ras)
    reoriented = np.ascontiguousarray(orientations.apply_orientation(data, ornt))
    affine = ras @ orientations.inv_ornt_aff(ornt, data.shape)
    spacing_ras = [0.0, 0.0, 0.0]
    for axis in range(3):
        spacing_ras[int(ornt[axis, 0])] = float(spacing[axis])
    return reoriented, affine, original, (spacing_ras[0], spacing_ras[1], spacing_ras[2])


def to_voxels(points_lps: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    ras = points_lps @ LPS_TO_RAS.T
    return ras @ inverse[:3, :3].T + inverse[:3, 3]


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    normal = np.cross(orientation[:3], orientation[3:])
    return normal / (np.linalg.norm(normal) or 1.0)
