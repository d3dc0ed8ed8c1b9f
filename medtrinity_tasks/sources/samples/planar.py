"""The 2D samples: ``synthetic_dermoscopy`` (RGB skin images with one pigmented lesion each and ISIC-style binary
masks, ``masks/<stem>_segmentation.png``; ``ground_truth.json`` gives each lesion's box), ``synthetic_chest_xray``
(16-bit frontal radiographs with a findings/boxes/report CSV) and ``synthetic_pathology_tiles`` (RGB TIFF tiles in
one folder per tissue class)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtrinity_tasks.sources.samples.phantom import fresh

DERMOSCOPY_SOURCE_ID = "synthetic_dermoscopy"
SKIN_RGB = (224, 178, 148)
LESION_RGB = (112, 72, 52)
DERMOSCOPY_SIZE = (320, 240)  # width, height
BAD_DERMOSCOPY = {
    "images/bad_zero_bytes.jpg": "not a readable image",
    "images/bad_text.jpg": "not a readable image",
    "images/bad_mask_size.jpg": "mask size (100, 100) differs from image size (320, 240)",
    "images/bad_no_mask.jpg": "file is missing: bad_no_mask_segmentation.png",
    "masks/orphan_segmentation.png": "mask file without a matching image",
}
"""The broken inputs ``write_dermoscopy(bad_inputs=True)`` adds, and the start of each reject reason."""


def write_dermoscopy(
    out: Path, cases: int = 8, seed: int = 11, bad_inputs: bool = False, size: tuple[int, int] = DERMOSCOPY_SIZE
) -> Path:
    """Write the 2D sample source under ``out/synthetic_dermoscopy`` and return that directory.
    ``size`` (width, height) lets benchmarks write camera-sized images."""
    from PIL import Image

    root = fresh(Path(out) / DERMOSCOPY_SOURCE_ID)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "SYNTHETIC.txt").write_text(
        "Computer-generated dermoscopy-like images for pipeline tests; not patient data.\n"
    )
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    truth = {}
    for case in range(cases):
        # lesion centres walk over a 3 x 3 grid of the image so that every location word occurs
        cx = width * (0.2 + 0.3 * (case % 3)) + rng.uniform(-8, 8)
        cy = height * (0.2 + 0.3 * ((case // 3) % 3)) + rng.uniform(-8, 8)
        a, b = width * rng.uniform(0.06, 0.12), height * rng.uniform(0.06, 0.12)
        mask = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0
        shading = 1.0 - 0.15 * ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / (width * height / 2)
        pixels = np.array(SKIN_RGB, np.float32) * shading[..., None]
        pixels[mask] = LESION_RGB
        pixels += rng.normal(0.0, 6.0, pixels.shape)
        name = f"synthetic_{case:04d}"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=92)
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}_segmentation.png")
        x0, x1 = np.flatnonzero(mask.any(axis=0))[[0, -1]]
        y0, y1 = np.flatnonzero(mask.any(axis=1))[[0, -1]]
        truth[f"images/{name}.jpg"] = {"bbox_xyxy": [int(x0), int(y0), int(x1) + 1, int(y1) + 1]}
    if bad_inputs:
        image = Image.fromarray(np.full((height, width, 3), SKIN_RGB, np.uint8))
        (root / "images" / "bad_zero_bytes.jpg").write_bytes(b"")
        (root / "masks" / "bad_zero_bytes_segmentation.png").write_bytes(b"")
        (root / "images" / "bad_text.jpg").write_text("not an image\n")
        image.save(root / "images" / "bad_mask_size.jpg")
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(root / "masks" / "bad_mask_size_segmentation.png")
        image.save(root / "images" / "bad_no_mask.jpg")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "masks" / "orphan_segmentation.png")
    (root / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    return root


CXR_SOURCE_ID = "synthetic_chest_xray"
CXR_SIZE = 256
BAD_CHEST_XRAY = {
    "images/bad_missing.png": "file is missing",
    "images/bad_unlisted.png": "not listed in table.csv",
    "images/bad_label.png": "label 'Alien' is not defined",
    "images/bad_box.png": "box ['a', '1', '2', '3'] is not four numbers",
}
"""Broken inputs ``write_chest_xray(bad_inputs=True)`` adds, and the start of each reject reason; it
also adds ``images/bad_box_outside.png``, whose box lies outside the image: the gate quarantines it."""


def write_chest_xray(out: Path, cases: int = 8, seed: int = 13, bad_inputs: bool = False) -> Path:
    """Frontal chest radiographs (16-bit PNG) with a CSV of findings, boxes and report sentences,
    in the manner of NIH ChestX-ray14's tables; nodules sit at known places in the lungs."""
    import csv

    from PIL import Image

    root = fresh(Path(out) / CXR_SOURCE_ID)
    (root / "images").mkdir(parents=True)
    (root / "SYNTHETIC.txt").write_text("Computer-generated chest radiograph-like images; not patient data.\n")
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:CXR_SIZE, 0:CXR_SIZE].astype(np.float32)
    rows = []

    def radiograph(nodule: tuple[float, float, float] | None) -> np.ndarray:
        body = 30000 - 8000 * ((xs - 128) / 128) ** 2
        for cx in (80, 176):  # lung fields: dark
            body[((xs - cx) / 38) ** 2 + ((ys - 120) / 80) ** 2 <= 1] -= 14000
        if nodule:
            x, y, r = nodule
            body[(xs - x) ** 2 + (ys - y) ** 2 <= r**2] += 9000
        return np.clip(body + rng.normal(0, 600, body.shape), 0, 65535).astype(np.uint16)

    for case in range(cases):
        name = f"cxr_{case:04d}.png"
        if case % 2:  # a nodule in the right (image left) or left lung, upper or lower zone
            x = 80.0 if case % 4 == 1 else 176.0
            y = 80.0 if case % 8 < 4 else 160.0
            r = 7.0 + case % 3
            Image.fromarray(radiograph((x, y, r))).save(root / "images" / name)
            side = "right" if x < 128 else "left"
            zone = "upper" if y < 120 else "lower"
            box = [f"{x - r:.0f}", f"{y - r:.0f}", f"{2 * r + 1:.0f}", f"{2 * r + 1:.0f}"]
            rows.append([name, "Nodule", *box, f"A nodule in the {side} {zone} lung zone."])
        else:
            Image.fromarray(radiograph(None)).save(root / "images" / name)
            rows.append([name, "No Finding", "", "", "", "", "No acute cardiopulmonary abnormality."])
    if bad_inputs:
        for name in ("bad_unlisted.png", "bad_label.png", "bad_box.png", "bad_box_outside.png"):
            Image.fromarray(radiograph(None)).save(root / "images" / name)
        rows += [
            ["bad_missing.png", "No Finding", "", "", "", "", ""],
            ["bad_label.png", "Alien", "", "", "", "", ""],
            ["bad_box.png", "Nodule", "a", "1", "2", "3", ""],
            ["bad_box_outside.png", "Nodule", "300", "20", "10", "10", "A nodule beyond the film."],
        ]
    with (root / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Label", "x", "y", "w", "h", "Report"])
        writer.writerows(rows)
    return root


TILES_SOURCE_ID = "synthetic_pathology_tiles"
TILE_CLASSES = {"ADI": (245, 240, 245), "NORM": (200, 120, 170), "TUM": (120, 50, 130)}
BAD_TILES = {
    "images/stray.tif": "not inside a class folder",
    "images/XYZ/x_0000.tif": "folder 'XYZ' is not a label",
    "images/TUM/bad_zero_bytes.tif": "not a readable image",
}


def write_pathology_tiles(out: Path, cases: int = 8, seed: int = 17, bad_inputs: bool = False) -> Path:
    """H&E-like RGB TIFF tiles sorted into one folder per tissue class (NCT-CRC-HE-100K style)."""
    from PIL import Image

    root = fresh(Path(out) / TILES_SOURCE_ID)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (root / "SYNTHETIC.txt").write_text("Computer-generated tissue-like tiles; not patient data.\n")

    def tile(colour) -> Image.Image:
        pixels = np.array(colour, np.float32) + rng.normal(0, 12, (112, 112, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    for number, (name, colour) in enumerate(sorted(TILE_CLASSES.items())):
        (root / "images" / name).mkdir(parents=True)
        for case in range(cases):
            tile(colour).save(root / "images" / name / f"{name}-{number}{case:03d}.tif")
    if bad_inputs:
        tile(TILE_CLASSES["ADI"]).save(root / "images" / "stray.tif")
        (root / "images" / "XYZ").mkdir()
        tile(TILE_CLASSES["ADI"]).save(root / "images" / "XYZ" / "x_0000.tif")
        (root / "images" / "TUM" / "bad_zero_bytes.tif").write_bytes(b"")
    return root
