"""Where a region is, in the words a radiologist uses, derived from the image's patient orientation.

``patient_orientation`` gives the patient direction of increasing column and increasing row
(DICOM's Patient Orientation, e.g. ["L", "P"] for an axial slice in radiological view). Image
left is therefore patient right only when the orientation says so; nothing here assumes it. Axial and
coronal planes hold the patient's left and right; a sagittal plane does not, so its side is the slice's
own (``on_side``).
"""

from __future__ import annotations

WORDS = {"L": "left", "R": "right", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}
DICOM_SYNONYMS = {"H": "S", "F": "I"}
"""DICOM's Patient Orientation says head and foot where a volume's axes say superior and inferior."""
WITHIN = ", within the "
"""How a location names the organ a region lies in: 'right anterior abdomen, within the liver'."""
CENTRAL_BAND = (0.4, 0.6)
"""A centroid between 40% and 60% of the image along an axis lies centrally on that axis."""


def patient_axes(patient_orientation: list[str] | None) -> tuple[str, str] | None:
    """The patient directions of +column and +row as letters of ``WORDS``: an oblique direction ('LP') by
    its first, dominant, letter, DICOM's H and F as S and I; None unless the orientation gives two
    directions on different patient axes."""
    if not patient_orientation or len(patient_orientation) != 2:
        return None
    column, row = (DICOM_SYNONYMS.get(code[:1].upper(), code[:1].upper()) for code in patient_orientation)
    if column not in WORDS or row not in WORDS or row in (column, OPPOSITE[column]):
        return None
    return column, row


def side_along(fraction: float, direction: str) -> str | None:
    """The patient side of a position ``fraction`` (0..1) along an axis pointing to ``direction``."""
    low, high = CENTRAL_BAND
    if fraction < low:
        return WORDS[OPPOSITE[direction]]
    if fraction > high:
        return WORDS[direction]
    return None


def describe_location(
    centroid_xy: tuple[float, float],
    width: int,
    height: int,
    patient_orientation: list[str] | None,
    region: str,
    organ: str | None = None,
    frame: tuple[float, float, float, float] | None = None,
) -> str:
    """E.g. 'right anterior abdomen, within the liver'; without a patient orientation (photographs,
    endoscopy) the words are the image's own, e.g. 'upper left part of the image'. ``frame`` (x0, y0,
    x1, y1) is the patient's extent on the image where known (the body on CT): sides are judged
    within it, so a patient off the image centre keeps true sides."""
    x, y = centroid_xy
    axes = patient_axes(patient_orientation)
    if axes is None:
        return image_location(centroid_xy, width, height)
    x0, y0, x1, y1 = frame or (0, 0, width, height)
    col_dir, row_dir = axes
    parts = []
    for fraction, direction in (((x + 0.5 - x0) / (x1 - x0), col_dir), ((y + 0.5 - y0) / (y1 - y0), row_dir)):
        side = side_along(fraction, direction)
        if side is None and direction in "LR":
            side = "midline"
        if side:
            parts.append(side)
    parts.sort(key=lambda word: word not in ("left", "right", "midline"))  # laterality first
    place = f"{' '.join(parts)} {region}" if parts else f"central {region}"
    return f"{place}{WITHIN}{organ}" if organ and organ != region else place  # not "abdomen, within the abdomen"


def without_organ(location: str, organ: str) -> str:
    """``location`` less its organ, for a region that is that organ: a spleen does not lie within the spleen."""
    return location.removesuffix(f"{WITHIN}{organ}")


def on_side(place: str, side: str | None) -> str:
    """``place`` with the side of the midline a sagittal slice lies on, laterality first as in every
    location ('left posterior superior brain'); the place as it is where no side is known or it names one."""
    if not side or any(word in place.split(",")[0].split() for word in ("left", "right", "midline")):
        return place
    return f"{side} {place.removeprefix('central ')}"


def image_location(centroid_xy: tuple[float, float], width: int, height: int) -> str:
    """Where the region is on the image grid, whatever the patient orientation: e.g. 'upper left
    part of the image' (a reviewer's words for finding it on screen)."""
    fx, fy = (centroid_xy[0] + 0.5) / width, (centroid_xy[1] + 0.5) / height
    low, high = CENTRAL_BAND
    vertical = "upper" if fy < low else "lower" if fy > high else None
    horizontal = "left" if fx < low else "right" if fx > high else None
    words = [w for w in (vertical, horizontal) if w]
    return f"{' '.join(words)} part of the image" if words else "centre of the image"
