"""How a region looks against its surroundings, in words, by explicit thresholds.

Every function takes a boolean 2D ``mask`` of the region on its image (row, column). Pixel spacing,
where given, is ``[row, column]`` in mm per pixel (a third, slice, element is ignored).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

CONTRAST_LEVELS = 10.0
"""Mean grey-level difference (of 255) below which a region is iso-: ~16 HU in a 400 HU window."""
HETEROGENEOUS_STD = 18.0
"""Grey-level standard deviation inside the region above which it is called heterogeneous."""
RING_PIXELS = 3
"""Width in pixels of the ring of surrounding tissue a region is compared with."""

ISO_HU = 15.0
"""Mean HU difference from the surrounding ring below which a CT region is isodense."""
HETEROGENEOUS_HU = 20.0
"""HU standard deviation inside a CT region above which it is called heterogeneous."""

SHAPE_MIN_PIXELS = 12
"""Regions with fewer pixels than this are too coarse for shape words: a few pixels are all 'square'."""
SOLIDITY_IRREGULAR = 0.85
"""Area over convex-hull area below which a region is irregular (lobulated, spiculated, branching)."""
ROUND_RATIO = 0.85
"""Minor over major axis at or above which a (solid) region is round."""
OVAL_RATIO = 0.4
"""Minor over major axis at or above which a region is oval, else elongated: a rasterised 2:1 ellipse
measures 0.48-0.49, so the cut sits below it, at 2.5:1."""

MARGIN_MIN_CONTRAST = 10.0
"""Grey-level contrast (of 255) between region and ring below which its margin cannot be judged."""
SHARP_MARGIN = 0.5
"""Edge step over overall contrast at or above which a margin is well-defined: a hard edge gives 1.0,
one anti-aliased by resampling ~0.77, a Gaussian blur of sigma 1 px ~0.45 and of 3 px ~0.2."""


def surrounding_ring(mask: np.ndarray) -> np.ndarray:
    """The pixels within ``RING_PIXELS`` of the region, outside it."""
    return ndimage.binary_dilation(mask, iterations=RING_PIXELS) & ~mask


def region_edge(mask: np.ndarray) -> np.ndarray:
    """The region's pixels with a 4-neighbour outside it (the image border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask)


def ring_window(rows: np.ndarray, cols: np.ndarray) -> tuple[slice, slice]:
    """The region's box (from its pixels' ``rows`` and ``cols``) widened by ``RING_PIXELS``: the region
    and its ring lie within it, so the words are measured on that window rather than the whole image."""
    return np.s_[
        max(rows.min() - RING_PIXELS, 0) : rows.max() + RING_PIXELS + 1,
        max(cols.min() - RING_PIXELS, 0) : cols.max() + RING_PIXELS + 1,
    ]


def _grey(pixels: np.ndarray) -> np.ndarray:
    """One grey level per pixel: colour images are averaged over their channels."""
    grey = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    return grey.astype(np.float64)


def region_axes(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> tuple[float, float]:
    """Major and minor axis lengths of the region's equivalent ellipse (4 * sqrt of the eigenvalues of
    the coordinate covariance), in the units of ``spacing`` (pixels by default): for a disk both equal
    its diameter, so sizes read like a radiologist's two perpendicular diameters. Coordinates are
    scaled before the analysis, so anisotropic pixels give the physical shape. An axis is never
    shorter than one pixel seen along it: a one-pixel-thick line has a thickness, and a single pixel
    measures one pixel each way."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the region is empty")
    coords = np.vstack([rows * spacing[0], cols * spacing[1]]).astype(np.float64)
    covariance = np.atleast_2d(np.cov(coords, bias=True))
    values, vectors = np.linalg.eigh(covariance)
    lengths = []
    for value, vector in zip(values, vectors.T, strict=True):
        pixel_extent = abs(vector[0]) * spacing[0] + abs(vector[1]) * spacing[1]
        lengths.append(max(4.0 * float(np.sqrt(max(value, 0.0))), pixel_extent))
    major, minor = sorted(lengths, reverse=True)
    return major, minor


def _spacing_pair(spacing_mm: list[float] | None) -> tuple[float, float] | None:
    """Row and column spacing, or None when the image has no physical scale."""
    if not spacing_mm or len(spacing_mm) < 2 or spacing_mm[0] is None or spacing_mm[1] is None:
        return None
    return float(spacing_mm[0]), float(spacing_mm[1])


def _mm(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def describe_size(mask: np.ndarray, spacing_mm: list[float] | None) -> tuple[str, list[float] | None]:
    """E.g. ('about 18 x 12 mm', [18.3, 12.1]); without a spacing ('about 40 x 25 pixels', None), as a
    pixel count is no size. Whole mm from 10 mm up, one decimal below, where a millimetre matters."""
    spacing = _spacing_pair(spacing_mm)
    if spacing is None:
        major, minor = region_axes(mask)
        return f"about {major:.0f} x {minor:.0f} pixels", None
    major, minor = region_axes(mask, spacing)
    return f"about {_mm(major)} x {_mm(minor)} mm", [round(major, 1), round(minor, 1)]


def solidity(mask: np.ndarray) -> float:
    """Region area over the area of its convex hull, both counting pixels as unit squares (the hull
    spans the pixels' corners), so a filled rectangle is exactly 1."""
    rows, cols = np.nonzero(region_edge(mask))  # the hull only touches the edge
    corners = np.unique(
        np.concatenate([np.column_stack([rows + dr, cols + dc]) for dr in (0, 1) for dc in (0, 1)]), axis=0
    )
    return float(mask.sum()) / ConvexHull(corners).volume  # in 2D, "volume" is the area


def describe_shape(mask: np.ndarray, spacing_mm: list[float] | None = None) -> str:
    """'irregular' when the region fills too little of its convex hull, else 'round', 'oval' or
    'elongated' by its axis ratio (measured in mm when a spacing is given: anisotropic pixels change
    the ratio, not the solidity)."""
    if int(mask.sum()) < SHAPE_MIN_PIXELS:
        return "too small to characterise"
    if solidity(mask) < SOLIDITY_IRREGULAR:
        return "irregular"
    major, minor = region_axes(mask, _spacing_pair(spacing_mm) or (1.0, 1.0))
    ratio = minor / major
    if ratio >= ROUND_RATIO:
        return "round"
    return "oval" if ratio >= OVAL_RATIO else "elongated"


def margin_sharpness(grey: np.ndarray, mask: np.ndarray) -> tuple[float, float] | None:
    """(sharpness, overall contrast): the grey step across the boundary (region's edge pixels minus the
    pixels just outside) over the contrast between the region and its ring. A hard edge makes the whole
    contrast in one pixel (1.0); a blurred one spreads it over several (small). None when nothing
    surrounds the region."""
    grey = _grey(grey)
    edge = region_edge(mask)
    outside = ndimage.binary_dilation(mask) & ~mask
    ring = surrounding_ring(mask)
    if not outside.any() or not ring.any():
        return None
    contrast = grey[mask].mean() - grey[ring].mean()
    step = grey[edge].mean() - grey[outside].mean()
    return (abs(step) / abs(contrast) if contrast else 0.0), float(contrast)


def describe_margin(grey: np.ndarray, mask: np.ndarray) -> str:
    """'well-defined margin', 'ill-defined margin', or 'margin not assessable' when the region barely
    differs from its surroundings (or nothing surrounds it), as there is then no edge to judge."""
    measured = margin_sharpness(grey, mask)
    if measured is None or abs(measured[1]) < MARGIN_MIN_CONTRAST:
        return "margin not assessable"
    return "well-defined margin" if measured[0] >= SHARP_MARGIN else "ill-defined margin"


def to_hu(grey: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    """Hounsfield units of an 8-bit CT image made by mapping ``low..high`` HU to 0..255. Values outside
    the window were clipped, so what comes back is bounded by the window."""
    low, high = hu_window
    return low + np.asarray(grey, dtype=np.float64) / 255.0 * (high - low)


def describe_texture(
    pixels: np.ndarray,
    mask: np.ndarray,
    ring: np.ndarray,
    modality: str,
    photographic: bool = False,
    hu_window: tuple[float, float] | None = None,
) -> str:
    """Contrast against the ring around the region, and homogeneity inside it, in the words of the
    modality: -dense for CT, opacity for radiographs, -intense for other radiology, darker/brighter
    for photographs. CT with its ``hu_window`` is judged in HU, with the means in the words (bounded
    by the window: a region clipped at its top reads as the window's upper limit)."""
    grey = _grey(pixels)
    if hu_window is not None and modality.upper() == "CT" and not photographic:
        return _describe_ct_hu(to_hu(grey, hu_window), mask, ring)
    inside = grey[mask]
    around = grey[ring]
    if around.size == 0:
        contrast = "of undetermined contrast"
    else:
        delta = inside.mean() - around.mean()
        level = 1 if abs(delta) < CONTRAST_LEVELS else (2 if delta > 0 else 0)
        if photographic:
            contrast = ("darker than", "similar in tone to", "brighter than")[level] + " the surrounding tissue"
        elif modality.upper() in ("XR", "CR", "DX", "MG"):  # projection radiographs: bright = opaque
            contrast = ("more lucent than", "similar in opacity to", "more opaque than")[
                level
            ] + " the surrounding tissue"
        else:
            suffix = "dense" if modality.upper() == "CT" else "intense"
            contrast = f"{('hypo', 'iso', 'hyper')[level]}{suffix} relative to the surrounding tissue"
    texture = "heterogeneous" if inside.std() > HETEROGENEOUS_STD else "homogeneous"
    return f"{contrast}, {texture}"


def _hu(value: float) -> str:
    return f"{int(round(value))} HU"  # whole HU, and never "-0"


def _describe_ct_hu(hu: np.ndarray, mask: np.ndarray, ring: np.ndarray) -> str:
    """CT density words from HU, e.g. 'hypodense relative to the surrounding tissue (about 40 HU
    against 120 HU), homogeneous'."""
    inside = hu[mask]
    texture = "heterogeneous" if inside.std() > HETEROGENEOUS_HU else "homogeneous"
    if not ring.any():
        return f"of undetermined contrast (about {_hu(inside.mean())}), {texture}"
    around = hu[ring].mean()
    delta = inside.mean() - around
    level = "iso" if abs(delta) < ISO_HU else ("hyper" if delta > 0 else "hypo")
    return (
        f"{level}dense relative to the surrounding tissue (about {_hu(inside.mean())} against {_hu(around)}), {texture}"
    )
