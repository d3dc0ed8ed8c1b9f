"""ROIs drawn on their image: each mask tinted and outlined, each box framed, in one colour per ROI,
so a reviewer (the dataset browser) and a model (the prompt's image) see at a glance what the
description is about."""

from __future__ import annotations

import io

import numpy as np

from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.descriptors import region_edge

PALETTE = ((255, 48, 48), (48, 200, 255), (255, 200, 0), (120, 255, 64), (255, 64, 255), (255, 140, 0))
MASK_ALPHA = 0.35


def roi_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def draw_rois(png: bytes, rois: list[dict]) -> bytes:
    """``png`` with ``rois`` (record ROI dicts) drawn on it, as PNG. A box that lies partly outside
    the image (the gate quarantines those) is drawn where it overlaps."""
    from PIL import Image, ImageDraw

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32)
    height, width = image.shape[:2]
    for index, roi in enumerate(rois):
        colour = np.array(roi_colour(index), dtype=np.float32)
        mask_rle = roi.get("mask_rle")
        if mask_rle and list(mask_rle["size"]) == [height, width]:
            mask = rle.decode(mask_rle)
            image[mask] = (1 - MASK_ALPHA) * image[mask] + MASK_ALPHA * colour
            image[region_edge(mask)] = colour
    canvas = Image.fromarray(image.round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for index, roi in enumerate(rois):
        box = roi.get("bbox_xyxy")
        if box:
            x0, y0, x1, y1 = box  # x1, y1 exclusive
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=roi_colour(index), width=max(1, round(width / 256)))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()
