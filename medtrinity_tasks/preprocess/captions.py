"""Coarse captions: the metadata of an image (modality, region, anatomy, findings) in one sentence.

Only catalog metadata and annotation facts enter a caption: never file names, patient ids or
header fields, so no identifier can reach a caption or a prompt.
"""

from __future__ import annotations

from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Stage

MODALITY_NAMES = {"CT": "computed tomography (CT)", "MR": "magnetic resonance (MR)", "XR": "radiograph"}


def join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def coarse_caption(row: dict, source: SourceEntry) -> str:
    modality = MODALITY_NAMES.get(source.modality, source.modality)
    text = f"{row['axis'].capitalize()} {modality} slice of the {source.body_region}"
    if row.get("anatomy"):
        text += f" showing the {join_words(row['anatomy'])}"
    counts: dict[str, int] = {}
    for roi in row.get("rois") or []:
        counts[roi["label"]] = counts.get(roi["label"], 0) + 1
    if counts:
        findings = [f"{label} ({n} region{'s' if n > 1 else ''})" for label, n in counts.items()]
        text += f"; annotated findings: {join_words(findings)}"
    else:
        text += "; no lesion annotated on this slice"
    return text + "."


class CoarseCaption(Stage):
    name = "coarse_caption"
    version = "1"

    def __init__(self, source: SourceEntry):
        self.source = source

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [dict(row, coarse_caption=coarse_caption(row, self.source)) for row in rows]
