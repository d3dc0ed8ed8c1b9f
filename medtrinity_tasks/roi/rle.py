"""COCO run-length encoding (the compressed string form pycocotools writes), in pure Python.

Runs are counted over the mask in column-major order, starting with a run of zeros; the string
stores each run (minus the run two places back, from the fourth on) in 5-bit groups offset by 48.
"""

from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return runs


def encode(mask: np.ndarray) -> dict:
    height, width = mask.shape
    runs = _runs(mask)
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return {"size": [height, width], "counts": "".join(chars)}


def decode(rle: dict) -> np.ndarray:
    height, width = rle["size"]
    text, runs, pos = rle["counts"], [], 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[pos]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    flat = np.zeros(height * width, dtype=bool)
    pos, on = 0, False
    for run in runs:
        if on:
            flat[pos : pos + run] = True
        pos += run
        on = not on
    return flat.reshape((height, width), order="F")
