import numpy as np
import pytest

from medtrinity_tasks.roi import rle


def test_known_encoding_is_column_major_and_starts_with_zeros():
    mask = np.array([[0, 1], [1, 1]], dtype=bool)  # column-major: 0, 1, 1, 1
    assert rle.encode(mask) == {"size": [2, 2], "counts": "13"}
    starts_on = np.array([[1, 0], [1, 0]], dtype=bool)  # 1, 1, 0, 0 -> runs 0, 2, 2
    assert rle.encode(starts_on)["counts"] == "022"


@pytest.mark.parametrize("seed", range(5))
def test_roundtrip_random_masks(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 300, size=2))
    mask = rng.random(shape) > rng.uniform(0.05, 0.95)
    encoded = rle.encode(mask)
    assert encoded["size"] == list(shape)
    assert np.array_equal(rle.decode(encoded), mask)


def test_roundtrip_large_runs_use_multi_character_deltas():
    mask = np.zeros((512, 512), dtype=bool)
    mask[100:400, 50:60] = True
    encoded = rle.encode(mask)
    assert len(encoded["counts"]) < 200
    assert np.array_equal(rle.decode(encoded), mask)


def test_empty_and_full_masks():
    for mask in (np.zeros((7, 5), bool), np.ones((7, 5), bool)):
        assert np.array_equal(rle.decode(rle.encode(mask)), mask)
