"""Coarse captions: the metadata of an image (modality, region, anatomy, findings) in one sentence.

Only catalog metadata and annotation facts enter a caption: never file names, patient ids or
header fields, so no identifier can reach a caption or a prompt.
"""

from __future__ import annotations

from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Stage

MODALITY_NAMES = {"CT": "computed tomography (CT)", "MR": "magnetic resonance (MR)", "XR": "X-ray radiograph"}


def image_kind(row: dict, modality: str) -> str:
    """'Axial computed tomography (CT) slice', 'Axial magnetic resonance (MR) FLAIR slice', or
    'Dermoscopy image' for a 2D source."""
    name = MODALITY_NAMES.get(modality, modality)
    if row.get("sequence"):
        name += f" {row['sequence']}"
    if row["axis"] == "image":
        return f"{name[0].upper()}{name[1:]} image"
    return f"{row['axis'].capitalize()} {name} slice"


def join_words(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def coarse_caption(row: dict, source: SourceEntry) -> str:
    text = f"{image_kind(row, source.modality)} of the {source.body_region}"
    shown = [part for part in row.get("anatomy") or [] if part != source.body_region]
    if shown:
        text += f" showing the {join_words(shown)}"
    counts: dict[str, int] = {}
    for roi in row.get("rois") or []:
        counts[roi["label"]] = counts.get(roi["label"], 0) + 1
    if counts:
        findings = [f"{label} ({n} region{'s' if n > 1 else ''})" for label, n in counts.items()]
        text += f"; annotated findings: {join_words(findings)}"
    elif not row.get("image_labels"):
        text += "; no lesion annotated"
    if row.get("image_labels"):
        text += f"; labelled: {join_words(row['image_labels'])}"
    return text + "."


class CoarseCaption(Stage):
    name = "coarse_caption"
    version = "1"
    reads = ("axis", "sequence", "anatomy", "rois", "image_labels")
    writes = ("coarse_caption",)

    def __init__(self, source: SourceEntry):
        self.source = source

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [dict(row, coarse_caption=coarse_caption(row, self.source)) for row in rows]
