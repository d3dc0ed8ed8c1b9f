"""Organ context: classical segmentations of the body, the lung fields and the brain on single 2D slices,
so that a region can be placed relative to an organ ("right lung, upper zone, peripheral").

Arrays are row-major ``[row, col]``; ``patient_orientation`` follows DICOM's Patient Orientation (the
patient direction of increasing column, then of increasing row), as in :mod:`.location`. SimpleITK is
imported only when a segmentation runs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BODY_HU = -500.0
"""Pixels above this (HU) are body: soft tissue, bone and fat, but not air or lung parenchyma."""
LUNG_HU = -400.0
"""Pixels below this (HU) are air: aerated lung, airways, bowel gas and the air around the patient."""
MIN_LUNG_FRACTION = 0.01
"""An air pocket inside the body is a lung field only if it covers at least this fraction of the body's area
(the trachea and small gas bubbles do not)."""
BRAIN_OPENING_RADIUS = 2
"""Radius (pixels) of the opening that detaches noise specks and thin bridges from the brain mask."""
ORGAN_OVERLAP = 0.5
"""Fraction of a region's pixels that must lie in one organ for the region to be placed in it."""
PERIPHERAL_FRACTION = 1 / 3
"""A region whose centroid is nearer the organ boundary than this fraction of the organ's largest inner
distance is peripheral."""
CENTRAL_FRACTION = 2 / 3
"""A region whose centroid is further from the organ boundary than this fraction of the organ's largest inner
distance is central."""


def _sitk():
    """SimpleITK, imported on use: it is heavy, and only a segmentation needs it."""
    try:
        import SimpleITK as sitk
    except ImportError as exc:  # a core dependency: a broken install, said plainly
        raise ImportError("organ context needs SimpleITK, a core dependency: pip install SimpleITK") from exc
    return sitk


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (all False if it is empty)."""
    sitk = _sitk()
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8))))
    return sitk.GetArrayFromImage(labels) == 1  # relabelled by decreasing size


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with the background regions it encloses (not reaching the image border) filled."""
    sitk = _sitk()
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8)), foregroundValue=1)
    return sitk.GetArrayFromImage(filled).astype(bool)


def body_mask_ct(hu: np.ndarray) -> np.ndarray:
    """The patient's body on a CT slice: the largest non-air component with its holes (lungs, bowel gas)
    filled, so that the table, clothing and other bodies in the field of view fall outside it."""
    return _fill_holes(largest_component(np.asarray(hu) > BODY_HU))


def _toward_right(centroid_rc: tuple[float, float], patient_orientation: list[str]) -> float:
    """A coordinate of ``centroid_rc`` that grows toward the patient's right, from the orientation."""
    for axis, direction in ((1, patient_orientation[0]), (0, patient_orientation[1])):
        if direction in ("L", "R"):
            return centroid_rc[axis] if direction == "R" else -centroid_rc[axis]
    raise ValueError(f"patient orientation {patient_orientation} has no left-right image axis")


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


def lung_fields_ct(hu: np.ndarray, patient_orientation: list[str]) -> dict[str, np.ndarray]:
    """The lung fields of an axial or coronal CT slice, keyed "right lung" / "left lung" by the patient
    side the orientation gives (never by image side), so that a region can be placed within a lung."""
    sitk = _sitk()
    hu = np.asarray(hu)
    body = body_mask_ct(hu)
    air = hu < LUNG_HU
    if air.any():  # air reaching the image border is around the patient, not in the lungs
        labels = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(air.astype(np.uint8))))
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        air &= ~np.isin(labels, border[border > 0])
    air &= body
    if not air.any():
        return {}
    min_size = int(np.ceil(MIN_LUNG_FRACTION * body.sum()))
    labels = sitk.GetArrayFromImage(
        sitk.RelabelComponent(
            sitk.ConnectedComponent(sitk.GetImageFromArray(air.astype(np.uint8))), minimumObjectSize=min_size
        )
    )
    fields = [labels == label for label in (1, 2) if (labels == label).any()]  # the two largest
    if not fields:
        return {}
    if len(fields) == 1:
        toward_right = _toward_right(_centroid(fields[0]), patient_orientation)
        side = "right" if toward_right > _toward_right(_centroid(body), patient_orientation) else "left"
        return {f"{side} lung": fields[0]}
    left, right = sorted(fields, key=lambda field: _toward_right(_centroid(field), patient_orientation))
    return {"right lung": right, "left lung": left}


def brain_mask_mr(image: np.ndarray) -> np.ndarray:
    """The head or brain on an MR slice: Otsu foreground, opened so that noise specks and thin bridges
    come loose, then the largest component with its holes (dark ventricles, lesions) filled."""
    sitk = _sitk()
    foreground = sitk.OtsuThreshold(sitk.GetImageFromArray(np.asarray(image, dtype=np.float32)), 0, 1)  # bright=1
    opened = sitk.BinaryMorphologicalOpening(foreground, [BRAIN_OPENING_RADIUS] * 2, foregroundValue=1)
    return _fill_holes(largest_component(sitk.GetArrayFromImage(opened).astype(bool)))


def _vertical_zone(row: float, organ: np.ndarray, row_direction: str) -> str | None:
    """Upper/middle/lower zone (superior first) or anterior/posterior part along the image's rows."""
    rows = np.nonzero(organ.any(axis=1))[0]
    top, bottom = int(rows[0]), int(rows[-1])
    if row_direction in ("S", "I"):
        fraction = float(np.clip((row - top + 0.5) / (bottom - top + 1), 0.0, 1.0))
        from_superior = fraction if row_direction == "I" else 1.0 - fraction
        return ("upper zone", "middle zone", "lower zone")[min(int(from_superior * 3), 2)]
    if row_direction in ("A", "P"):
        first_rows = row < (top + bottom) / 2  # the rows nearer index 0
        return "anterior part" if first_rows == (row_direction == "P") else "posterior part"
    return None


def organ_relative_location(
    roi_mask: np.ndarray, organs: dict[str, np.ndarray], patient_orientation: list[str] | None
) -> str | None:
    """Where a region lies within the organ holding most of it, e.g. "right lung, upper zone, peripheral";
    None when no organ holds at least ``ORGAN_OVERLAP`` of it. The zone needs a patient orientation."""
    roi = np.asarray(roi_mask, dtype=bool)
    size = int(roi.sum())
    if size == 0 or not organs:
        return None
    overlaps = {name: int((roi & np.asarray(mask, dtype=bool)).sum()) for name, mask in organs.items()}
    name = max(overlaps, key=overlaps.get)
    if overlaps[name] < ORGAN_OVERLAP * size:
        return None
    organ = np.asarray(organs[name], dtype=bool)
    row, col = _centroid(roi)
    words = [name]
    if patient_orientation:
        zone = _vertical_zone(row, organ, patient_orientation[1])
        if zone:
            words.append(zone)
    inner = ndimage.distance_transform_edt(organ)
    depth = inner[int(round(row)), int(round(col))] / inner.max()
    if depth < PERIPHERAL_FRACTION:
        words.append("peripheral")
    elif depth > CENTRAL_FRACTION:
        words.append("central")
    return ", ".join(words)
