"""ROIs drawn on their image: masks tinted and outlined, boxes framed, one colour per ROI."""

import io

import numpy as np
from PIL import Image

from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.overlay import MASK_ALPHA, draw_rois, roi_colour


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_overlay_tints_and_outlines_masks_and_frames_boxes():
    image = np.full((64, 64), 100, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    rois = [
        {"bbox_xyxy": [20.0, 20.0, 30.0, 30.0], "mask_rle": rle.encode(mask)},
        {"bbox_xyxy": [40.0, 5.0, 60.0, 15.0], "mask_rle": None},  # a box only, as from a CSV
        {"bbox_xyxy": [50.0, 50.0, 90.0, 90.0], "mask_rle": None},  # partly outside the image
    ]
    drawn = np.asarray(Image.open(io.BytesIO(draw_rois(_png(image), rois))).convert("RGB")).astype(int)
    first, second, third = (np.array(roi_colour(i)) for i in range(3))
    assert (drawn[20, 25] == first).all() and (drawn[29, 25] == first).all()  # mask edge and box frame
    tint = np.round((1 - MASK_ALPHA) * 100 + MASK_ALPHA * first)
    assert (drawn[25, 25] == tint).all()  # inside: the image shows through
    assert (drawn[5, 50] == second).all() and (drawn[14, 59] == second).all()  # x1, y1 are exclusive
    assert (drawn[10, 50] == 100).all()  # inside a box without a mask: untouched
    assert (drawn[50, 63] == third).all()
    assert (drawn[0, 0] == 100).all() and (drawn[35, 35] == 100).all()
