"""One ROI, whatever found it (a source's annotation or an expert model), described the same way:
box, RLE mask, area fraction, centroid; where it is on the image grid, in patient terms and, where an
organ mask exists, relative to the organ; its size (mm where the spacing is known), shape, margin,
and intensity against the surrounding tissue (HU on CT)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.descriptors import (
    describe_margin,
    describe_shape,
    describe_size,
    describe_texture,
    ring_window,
    surrounding_ring,
)
from medtrinity_tasks.roi.location import describe_location, image_location
from medtrinity_tasks.sources.catalog import SourceEntry

LUNG_REGIONS = {"chest", "thorax", "lung"}
BRAIN_REGIONS = {"head", "brain"}


def image_modality(source: SourceEntry, row: dict) -> tuple[str, str]:
    """(modality, body region) of a row's image: its own (a DICOM series' headers), else the catalog entry's."""
    return row.get("modality") or source.modality, row.get("body_region") or source.body_region


def hu_window(source: SourceEntry, row: dict) -> tuple[float, float] | None:
    """The HU range a CT image was windowed to (0 and 255 in the 8-bit image); None for other modalities."""
    modality, region = image_modality(source, row)
    window = source.display_window(modality, region) if modality == "CT" else None
    return (window.center - window.width / 2, window.center + window.width / 2) if window else None


FRAME_GRID = 128
"""The body's box is found on the image subsampled to about this many pixels across: thirds of the
body need no finer box, and at full size (512 x 512) the pass cost half the sample expert's forward pass."""


def body_frame(source: SourceEntry, row: dict, pixels: np.ndarray) -> tuple[float, float, float, float] | None:
    """The body's box on a CT image (x0, y0, x1, y1, exclusive; to within the subsampling step), so
    that sides are judged on the patient rather than on the image frame; None elsewhere, or when no
    body is found."""
    from medtrinity_tasks.roi.descriptors import to_hu
    from medtrinity_tasks.roi.organs import BODY_HU, largest_component

    window = hu_window(source, row)
    if not window or pixels.ndim != 2:
        return None
    step = max(1, min(pixels.shape) // FRAME_GRID)
    grid = pixels[::step, ::step]
    # pixels clipped at the window's floor may be air: in a soft-tissue window air and lung both read 0
    hu = np.where(grid > 0, to_hu(grid, window), -1000.0)
    # the body's box is its largest non-air component's box: filling its holes would not move it
    ys, xs = np.nonzero(largest_component(hu > BODY_HU))
    if not xs.size:
        return None
    height, width = pixels.shape
    return (
        float(xs.min() * step),
        float(ys.min() * step),
        float(min((xs.max() + 1) * step, width)),
        float(min((ys.max() + 1) * step, height)),
    )


def organ_context(source: SourceEntry, row: dict, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Organ masks from the classical experts, where the modality and region have one: lung fields
    on chest CT (from the HU the window kept), the brain on head MR. Empty elsewhere."""
    from medtrinity_tasks.roi import organs
    from medtrinity_tasks.roi.descriptors import to_hu

    if pixels.ndim != 2:
        return {}
    modality, region = image_modality(source, row)
    window = hu_window(source, row)
    orientation = row.get("patient_orientation")
    if window and region in LUNG_REGIONS and orientation:
        return organs.lung_fields_ct(to_hu(pixels, window), orientation)
    if modality == "MR" and region in BRAIN_REGIONS:
        mask = organs.brain_mask_mr(pixels)
        return {"brain": mask} if mask.any() else {}
    return {}


def connected_regions(mask: np.ndarray, min_pixels: int) -> Iterator[np.ndarray]:
    """Each connected component of ``mask`` (4-connected) of at least ``min_pixels`` pixels: smaller
    ones are partial-volume or prediction specks, not regions."""
    from scipy import ndimage

    components, count = ndimage.label(mask)
    for index in range(1, count + 1):
        region = components == index
        if region.sum() >= min_pixels:
            yield region


def describe_region(
    source: SourceEntry,
    row: dict,
    pixels: np.ndarray,
    mask: np.ndarray,
    label: str,
    organ: str | None,
    origin: str,
    organs: dict[str, np.ndarray] | None = None,
    bbox_xyxy: list[float] | None = None,
    frame: tuple[float, float, float, float] | None = None,
) -> dict:
    """The ROI dict of the record schema (plus ``organ`` for the caller). ``bbox_xyxy`` overrides the
    mask's box: a source's box may lie partly outside its image, and keeps its coordinates so the
    gate can quarantine it. ``frame`` is the patient's extent on the image (``body_frame``)."""
    from medtrinity_tasks.roi.organs import organ_relative_location

    height, width = mask.shape
    orientation = row.get("patient_orientation")
    modality, region = image_modality(source, row)
    within = None if organ == label else organ  # a region that outlines an organ is not placed within itself
    ys, xs = np.nonzero(mask)
    if bbox_xyxy is None:
        bbox_xyxy = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    x0, y0, x1, y1 = bbox_xyxy
    centroid = (float(xs.mean()), float(ys.mean())) if xs.size else ((x0 + x1) / 2, (y0 + y1) / 2)
    roi = {
        "label": label,
        "bbox_xyxy": [float(v) for v in bbox_xyxy],
        "mask_rle": rle.encode(mask),
        "area_fraction": float(mask.sum()) / mask.size,
        "centroid_xy": list(centroid),
        "location": describe_location(centroid, width, height, orientation, region, within, frame),
        "image_location": image_location(centroid, width, height),
        "organ_location": organ_relative_location(mask, organs, orientation) if organs and xs.size else None,
        "origin": origin,
        "organ": organ,
    }
    if not xs.size:
        not_measurable = "not measurable: the box lies outside the image"
        return dict(roi, texture=not_measurable, size=not_measurable, size_mm=None, shape=None, margin=None)
    window = ring_window(ys, xs)
    local, grey = mask[window], pixels[window]
    size, size_mm = describe_size(local, row.get("spacing_mm"))
    return dict(
        roi,
        texture=describe_texture(
            grey,
            local,
            surrounding_ring(local),
            modality,
            photographic=source.colour,
            hu_window=hu_window(source, row),
        ),
        size=size,
        size_mm=size_mm,
        shape=describe_shape(local, row.get("spacing_mm")),
        margin=describe_margin(grey, local),
    )
