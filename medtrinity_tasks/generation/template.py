"""The ``template`` engine: a deterministic, grounded description composed from the record's facts
and its retrieved passages.

It states only what the record holds (modality, anatomy, ROI boxes, locations and textures, the
annotated diseases), so it cannot hallucinate; the region-relationship section adds one sentence of
background from the best-ranked passage that names the record's disease (or its organ), quoted and
cited by the passage's id. It is the CPU default and the baseline an LLM engine's output is
compared against.
"""

from __future__ import annotations

import re

from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.preprocess.captions import image_kind, join_words
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.roi.location import WORDS
from medtrinity_tasks.stages.base import Stage

PROMPT_VERSION = PROMPT_VERSIONS["template"]
SECTION_TITLES = {
    "modality": "Modality",
    "organ_tissue": "Organ and tissue",
    "roi_location": "ROI location",
    "roi_texture": "ROI texture",
    "region_relationship": "Region relationship",
}
MAX_ROIS_NAMED = 3
MAX_BACKGROUND_CHARS = 300
"""The longest background sentence quoted from a passage."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _place(roi: dict) -> str:
    return roi["location"] + (f" ({roi['organ_location']})" if roi.get("organ_location") else "")


def _appearance(roi: dict) -> str:
    """E.g. 'The liver tumour is round with a well-defined margin; hypodense relative to ...'."""
    shape, margin = roi.get("shape"), roi.get("margin")
    words = shape if shape and not shape.startswith("too small") else ""
    if margin and "not assessable" not in margin:
        words += f"{' ' if words else ''}with a {margin}"
    return f"The {roi['label']} is {words + '; ' if words else ''}{roi['texture']}."


def background(record: dict) -> str:
    """One sentence of background from the best-ranked passage that names one of the record's
    diseases (failing that, its organ), quoted with its id: ' Background [ID]: "..."'; empty when
    no passage names either."""
    sentences = [
        (passage["id"], sentence)
        for passage in record.get("knowledge") or []
        for sentence in _SENTENCE.split(" ".join(passage["text"].split()))
        if len(sentence) <= MAX_BACKGROUND_CHARS
    ]
    for terms in (record.get("diseases") or [], [record.get("organ") or ""]):
        terms = [term.lower() for term in terms if term]
        for passage_id, sentence in sentences:
            if any(term in sentence.lower() for term in terms):
                return f' Background [{passage_id}]: "{sentence}"'
    return ""


def describe(record: dict) -> dict[str, str]:
    orientation = record.get("patient_orientation")
    view = f"; the patient's {WORDS[orientation[0]]} is on the image right" if orientation else ""
    sections = {"modality": f"{image_kind(record, record['modality'])}{view}."}
    anatomy = record.get("anatomy") or []
    spacing = record.get("spacing_mm")
    sections["organ_tissue"] = (
        f"The image shows the {join_words(anatomy)}."
        if anatomy
        else f"No labelled organ is in view; the image is of the {record['organ']}."
    ) + (
        f" Pixel spacing {spacing[0]:.3g} x {spacing[1]:.3g} mm; slice spacing {spacing[2]:.3g} mm." if spacing else ""
    )
    rois = (record.get("rois") or [])[:MAX_ROIS_NAMED]
    more = len(record.get("rois") or []) - len(rois)
    if not rois:
        sections["roi_location"] = "No region of interest is annotated on this image; it shows anatomical context."
        sections["roi_texture"] = "Not applicable: the image holds no annotated region."
        labelled = record.get("image_labels") or []
        sections["region_relationship"] = (
            f"No region is marked; the image as a whole is labelled {join_words(labelled)}"
            + (f", consistent with {join_words(record['diseases'])}." if record.get("diseases") else ".")
            if labelled
            else "No lesion is annotated; the organs in view serve as anatomical context."
        )
    else:
        sections["roi_location"] = " ".join(
            f"A {roi['label']} measuring {roi['size']} lies in the {_place(roi)}, "
            f"covering {100 * roi['area_fraction']:.1f}% of the image."
            for roi in rois
        ) + (f" {more} further region(s) are annotated." if more > 0 else "")
        sections["roi_texture"] = " ".join(_appearance(roi) for roi in rois)
        neighbours = [a for a in anatomy if a != record["organ"]]
        sections["region_relationship"] = (
            f"The largest region lies within the {record['organ']}"
            + (f", with the {join_words(neighbours)} also in view" if neighbours else "")
            + f"; the appearance is consistent with the annotated {join_words(record['diseases'])}."
        )
    sections["region_relationship"] += background(record)
    return {name: sections[name] for name in DESCRIPTION_SECTIONS}


def description_text(sections: dict[str, str]) -> str:
    return "\n".join(f"{SECTION_TITLES[name]}: {sections[name]}" for name in DESCRIPTION_SECTIONS)


class TemplateDescription(Stage):
    name = "generate_template"
    version = PROMPT_VERSIONS["template"]
    reads = (
        "modality", "sequence", "axis", "patient_orientation", "spacing_mm", "anatomy", "organ", "rois",
        "image_labels", "diseases",
    )  # fmt: skip
    reads_if_present = ("knowledge",)
    writes = ("description", "description_text", "knowledge", "generator")

    def process_batch(self, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            sections = describe(row)
            out.append(
                dict(
                    row,
                    description=sections,
                    description_text=description_text(sections),
                    knowledge=row.get("knowledge") or [],
                    generator={"engine": "template", "model": "none", "prompt_version": PROMPT_VERSION},
                )
            )
        return out
