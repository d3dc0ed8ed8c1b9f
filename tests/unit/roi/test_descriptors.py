"""Region words from synthetic shapes with known answers: axes, size, shape, margin, CT density."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from medtrinity_tasks.roi.descriptors import (
    describe_margin,
    describe_shape,
    describe_size,
    describe_texture,
    margin_sharpness,
    region_axes,
    solidity,
    surrounding_ring,
    to_hu,
)

SIZE = 121
ROWS, COLS = np.mgrid[:SIZE, :SIZE] - SIZE // 2


def disk(radius: float) -> np.ndarray:
    return ROWS**2 + COLS**2 <= radius**2


def ellipse(row_semi: float, col_semi: float) -> np.ndarray:
    return (ROWS / row_semi) ** 2 + (COLS / col_semi) ** 2 <= 1


def bar(length: int, width: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[60 - width // 2 : 60 - width // 2 + width, 60 - length // 2 : 60 - length // 2 + length] = True
    return mask


def cross(arm: int = 40, width: int = 6) -> np.ndarray:
    horizontal = bar(arm, width)
    return horizontal | horizontal.T


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)]


# axes and size


@pytest.mark.parametrize("radius", [5, 10, 20])
def test_a_disk_measures_its_diameter_both_ways(radius):
    major, minor = region_axes(disk(radius))
    assert major == pytest.approx(2 * radius, rel=0.05)
    assert minor == pytest.approx(2 * radius, rel=0.05)


def test_an_ellipse_measures_its_two_diameters_whichever_way_it_lies():
    major, minor = region_axes(ellipse(10, 20))
    assert (major, minor) == (pytest.approx(40, rel=0.05), pytest.approx(20, rel=0.05))
    assert region_axes(ellipse(20, 10)) == pytest.approx((major, minor))  # turned by 90 degrees


def test_a_single_pixel_measures_one_pixel_and_an_empty_region_is_refused():
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 3] = True
    assert region_axes(mask) == (1.0, 1.0)
    line = np.zeros((5, 20), dtype=bool)
    line[2, 2:18] = True
    assert region_axes(line)[1] == 1.0  # a one-pixel line is one pixel thick, not zero
    with pytest.raises(ValueError):
        region_axes(np.zeros((5, 5), dtype=bool))


def test_size_in_mm_with_an_isotropic_spacing():
    words, measured = describe_size(disk(20), [0.5, 0.5, 2.5])  # slice spacing ignored
    assert measured == pytest.approx([20.0, 20.0], rel=0.05)
    assert words == "about 20 x 20 mm"


def test_anisotropic_pixels_turn_a_pixel_circle_into_an_oval_in_mm():
    words, measured = describe_size(disk(20), [0.5, 1.0])
    assert measured == pytest.approx([40.0, 20.0], rel=0.05)  # columns are twice as wide as rows
    assert words == "about 40 x 20 mm"
    assert describe_shape(disk(20), [0.5, 1.0]) == "oval"
    assert describe_shape(disk(20)) == "round"


def test_small_sizes_keep_one_decimal_and_no_spacing_gives_pixels():
    words, measured = describe_size(disk(10), [0.3, 0.3])  # ~6 mm across
    assert words == f"about {measured[0]:.1f} x {measured[1]:.1f} mm"
    assert measured[0] == pytest.approx(6.0, rel=0.05)
    assert describe_size(ellipse(12, 20), None) == ("about 40 x 24 pixels", None)
    assert describe_size(ellipse(12, 20), [])[1] is None


# shape


def test_shape_words_follow_solidity_and_axis_ratio():
    assert describe_shape(disk(15)) == "round"
    assert describe_shape(ellipse(10, 20)) == "oval"
    assert describe_shape(bar(60, 10)) == "elongated"
    assert describe_shape(cross()) == "irregular"
    assert describe_shape(disk(1)) == "too small to characterise"  # 5 pixels


def test_solidity_counts_pixels_as_squares():
    assert solidity(bar(30, 7)) == pytest.approx(1.0)
    assert solidity(disk(15)) > 0.9
    assert solidity(cross()) < 0.7


def test_a_hollow_or_split_region_is_irregular_not_round():
    ring = disk(20) & ~disk(12)
    assert describe_shape(ring) == "irregular"


# margin


def disk_image(grey_inside: float, grey_around: float = 100.0, radius: int = 15) -> tuple[np.ndarray, np.ndarray]:
    mask = disk(radius)
    return np.where(mask, grey_inside, grey_around), mask


def test_a_hard_edge_is_well_defined_and_a_blurred_one_ill_defined():
    grey, mask = disk_image(160)
    assert describe_margin(grey, mask) == "well-defined margin"
    assert describe_margin(ndimage.gaussian_filter(grey, 3), mask) == "ill-defined margin"
    assert describe_margin(ndimage.gaussian_filter(grey, 1.5), mask) == "ill-defined margin"


def test_an_edge_softened_only_by_resampling_stays_well_defined():
    grey, mask = disk_image(160)
    assert margin_sharpness(grey, mask)[0] == pytest.approx(1.0)
    assert describe_margin(ndimage.gaussian_filter(grey, 0.5), mask) == "well-defined margin"


def test_margin_works_on_colour_and_either_polarity():
    grey, mask = disk_image(40)  # darker than its surroundings
    assert describe_margin(np.stack([grey] * 3, axis=2).astype(np.uint8), mask) == "well-defined margin"
    blurred = ndimage.gaussian_filter(grey, 3)
    assert describe_margin(np.stack([blurred] * 3, axis=2), mask) == "ill-defined margin"


def test_a_region_like_its_surroundings_has_no_margin_to_judge():
    grey, mask = disk_image(100)
    assert describe_margin(grey, mask) == "margin not assessable"
    grey, mask = disk_image(105)  # below MARGIN_MIN_CONTRAST
    assert describe_margin(grey, mask) == "margin not assessable"
    everything = np.ones((10, 10), dtype=bool)
    assert describe_margin(np.zeros((10, 10)), everything) == "margin not assessable"


# CT density in HU

WINDOW = (-160.0, 240.0)


def ct_image(region_hu: float, tissue_hu: float = 120.0, noise_hu: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit CT slice windowed as the pipeline does: HU mapped from the window to 0..255, clipped."""
    mask = disk(12)
    hu = np.where(mask, region_hu, tissue_hu) + np.random.default_rng(0).normal(0, noise_hu, mask.shape)
    low, high = WINDOW
    return np.clip(np.round((hu - low) / (high - low) * 255), 0, 255).astype(np.uint8), mask


def test_ct_with_its_window_is_described_in_hu():
    pixels, mask = ct_image(40)
    words = describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW)
    assert words.startswith("hypodense relative to the surrounding tissue (about ")
    assert words.endswith("), homogeneous")
    inside, around = numbers(words)
    assert inside == pytest.approx(40, abs=3)
    assert around == pytest.approx(120, abs=3)


def test_ct_within_iso_hu_is_isodense_and_above_it_hyperdense():
    pixels, mask = ct_image(125)
    words = describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW)
    assert words.startswith("isodense")
    assert numbers(words) == [pytest.approx(125, abs=3), pytest.approx(120, abs=3)]
    pixels, mask = ct_image(200)
    assert describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW).startswith("hyperdense")


def test_ct_heterogeneity_is_judged_in_hu():
    pixels, mask = ct_image(40, noise_hu=30)
    assert describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW).endswith(", heterogeneous")
    pixels, mask = ct_image(40, noise_hu=8)
    assert describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW).endswith(", homogeneous")


def test_hu_are_bounded_by_the_window():
    assert to_hu(np.array([0, 255]), WINDOW).tolist() == [-160.0, 240.0]
    pixels, mask = ct_image(400)  # clipped at the top of the window
    assert numbers(describe_texture(pixels, mask, surrounding_ring(mask), "CT", hu_window=WINDOW))[0] == 240


def test_without_a_window_or_outside_ct_the_grey_level_words_remain():
    pixels, mask = ct_image(40)
    ring = surrounding_ring(mask)
    assert describe_texture(pixels, mask, ring, "CT") == "hypodense relative to the surrounding tissue, homogeneous"
    assert describe_texture(pixels, mask, ring, "MR", hu_window=WINDOW).startswith("hypointense")


def test_photographic_and_radiograph_wordings_still_work():
    grey, mask = disk_image(160)
    ring = surrounding_ring(mask)
    colour = np.stack([grey] * 3, axis=2).astype(np.uint8)
    assert describe_texture(colour, mask, ring, "OT", photographic=True) == (
        "brighter than the surrounding tissue, homogeneous"
    )
    assert describe_texture(colour, mask, ring, "CT", photographic=True, hu_window=WINDOW).startswith("brighter")
    assert describe_texture(grey, mask, ring, "XR") == "more opaque than the surrounding tissue, homogeneous"
    dark, mask = disk_image(40)
    assert describe_texture(dark, mask, ring, "DX").startswith("more lucent than")
