"""The abdominal CT phantom every volume sample is drawn from: organs and lesions as ellipsoids and spheres of
known size, place and HU, stored under an affine that differs from case to case."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

SHAPE = (512, 512, 40)  # a clinical CT matrix, 5 mm slices
SPACING = (0.75, 0.75, 5.0)  # mm along the stored array axes
ORIENTATIONS = ("LPS", "RAS", "LAS", "RPI")  # stored axis codes, cycled over cases


LABELS = {0: "background", 1: "liver", 2: "liver tumour", 3: "spleen", 4: "kidney", 5: "renal cyst"}


# Ellipsoids in RAS+ millimetres around the body centre: (label, centre, semi-axes, HU).
ORGANS = [
    (1, (55.0, 10.0, 10.0), (60.0, 50.0, 60.0), 60.0),  # liver: patient right, anterior
    (3, (-75.0, -15.0, 20.0), (25.0, 35.0, 40.0), 50.0),  # spleen: patient left, posterior
    (4, (55.0, -65.0, -25.0), (20.0, 25.0, 35.0), 140.0),  # right kidney, contrast-enhanced
    (4, (-55.0, -65.0, -25.0), (20.0, 25.0, 35.0), 140.0),  # left kidney
]


def case_lesions(case: int) -> list[dict]:
    """Each case has a liver tumour; every other case also a cyst in the left kidney."""
    lesions = [
        {
            "label": 2,
            "name": "liver tumour",
            "organ": "liver",
            "center_ras_mm": [50.0 + 4 * (case % 3), 20.0 - 3 * (case % 4), 15.0],
            "radius_mm": 10.0 + 2.0 * (case % 4),
            "hu": 10.0,
            "side": "right",
        }
    ]
    if case % 2 == 0:
        lesions.append(
            {
                "label": 5,
                "name": "renal cyst",
                "organ": "kidney",
                "center_ras_mm": [-55.0, -65.0, -25.0],
                "radius_mm": 9.0,
                "hu": 0.0,
                "side": "left",
            }
        )
    return lesions


def case_affine(orientation: str, case: int, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Voxel-to-RAS affine for an array stored with the given axis codes, centred near the origin."""
    signs = [1.0 if code in "RAS" else -1.0 for code in orientation]
    affine = np.diag([s * d for s, d in zip(signs, spacing, strict=True)] + [1.0])
    centre_voxel = (np.array(shape) - 1) / 2.0
    offset = np.array([3.5 * case, -2.0 * case, 1.5 * case])  # a different origin for every case
    affine[:3, 3] = offset - affine[:3, :3] @ centre_voxel
    return affine


def phantom(
    affine: np.ndarray, lesions: list[dict], rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    # The affines are diagonal (flips, scales, offsets), so each world axis depends on one array
    # axis: broadcast three coordinate vectors instead of materialising a world grid.
    world = [
        (affine[axis, axis] * np.arange(shape[axis], dtype=np.float32) + affine[axis, 3]).reshape(
            [-1 if a == axis else 1 for a in range(3)]
        )
        for axis in range(3)
    ]
    x, y, z = world
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    body = np.broadcast_to((x / 150.0) ** 2 + (y / 110.0) ** 2 <= 1.0, shape)
    hu[body] = -100.0  # subcutaneous fat
    hu[np.broadcast_to((x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1.0, shape)] = 40.0  # soft tissue
    for label, centre, semi, value in ORGANS:
        inside = sum(((w - c) / s) ** 2 for w, c, s in zip(world, centre, semi, strict=True)) <= 1.0
        hu[inside], labels[inside] = value, label
    for lesion in lesions:
        inside = (
            sum((w - c) ** 2 for w, c in zip(world, lesion["center_ras_mm"], strict=True)) <= lesion["radius_mm"] ** 2
        )
        hu[inside], labels[inside] = lesion["hu"], lesion["label"]
    hu += rng.standard_normal(shape, dtype=np.float32) * 8.0
    return np.round(hu).astype(np.int16), labels


def fresh(root: Path) -> Path:
    """``root``, removed if it exists: each sample is written anew."""
    if root.exists():
        shutil.rmtree(root)
    return root
