"""Coarse captions: the metadata of an image (modality, region, anatomy, findings) in one sentence.

Only catalog metadata and annotation facts enter a caption: never file names, patient ids or
header fields, so no identifier can reach a caption or a prompt.
"""

from __future__ import annotations

from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages.base import Stage

MODALITY_NAMES = {
    "CT": "computed tomography (CT)", "MR": "magnetic resonance (MR)", "XR": "X-ray radiograph",
    "CR": "computed radiography (CR) X-ray", "DX": "digital radiography (DX) X-ray", "MG": "X-ray mammography (MG)",
    "IO": "intra-oral X-ray (IO)", "PX": "panoramic X-ray (PX)", "XA": "X-ray angiography (XA)",
    "RF": "X-ray fluoroscopy (RF)", "US": "ultrasound (US)", "NM": "nuclear medicine (NM)",
    "PT": "positron emission tomography (PET)", "SC": "secondary capture (SC)", "OT": "other-modality (OT)",
    "ES": "endoscopy (ES)", "XC": "external camera photography (XC)", "OP": "ophthalmic photography (OP)",
    "SM": "slide microscopy (SM)", "GM": "general microscopy (GM)",
}  # fmt: skip
"""How a caption names each modality: the catalog's names and the DICOM Modality codes."""


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
    """The image's own modality and region (a DICOM series' own), else the catalog entry's."""
    region = row.get("body_region") or source.body_region
    text = f"{image_kind(row, row.get('modality') or source.modality)} of the {region}"
    shown = [part for part in row.get("anatomy") or [] if part != region]
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
    reads = ("modality", "body_region", "axis", "sequence", "anatomy", "rois", "image_labels")
    writes = ("coarse_caption",)

    def __init__(self, source: SourceEntry):
        self.source = source

    def process_batch(self, rows: list[dict]) -> list[dict]:
        return [dict(row, coarse_caption=coarse_caption(row, self.source)) for row in rows]
