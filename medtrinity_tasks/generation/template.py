"""The ``template`` engine: a deterministic, grounded description composed from the record's facts
and its retrieved passages.

It states only what the record holds (modality and view, anatomy, ROI boxes, locations and textures,
the annotated diseases), so it cannot hallucinate; the region-relationship section adds one sentence of
background from the best-ranked passage that names the record's disease (or its organ), quoted and
cited by the passage's id. It is the CPU default and the baseline an LLM engine's output is
compared against.

Every fact may be missing, and each sentence is built for what is there: a region that outlines an
organ (an organ-only source's label, found in the record's anatomy) is anatomy, not a finding, and
never lies within itself; shape and margin words the descriptors could not judge are left out with
their grammar; articles follow the next word's sound; a record without regions says that none is
annotated; a sagittal slice, whose plane has no left or right, states the side of the midline it lies on.
"""

from __future__ import annotations

import re

from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.generation.grammar import capitalised, with_article
from medtrinity_tasks.preprocess.captions import image_kind, join_words
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.roi.location import on_side, patient_axes, without_organ
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
FACING = {"L": "left", "R": "right", "A": "front", "P": "back", "S": "head", "I": "feet"}
"""The part of the patient toward the image's right edge: 'the patient's back is on the image right'."""
SLICE_SIDES = {"left": "left of the midline", "right": "right of the midline", "midline": "at the midline"}
"""A sagittal slice's ``slice_side`` in the organ sentence."""
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _is_organ(roi: dict, record: dict) -> bool:
    """A region that outlines an organ (an organ-only source's labels), not a lesion or finding in one."""
    return roi["label"] in (record.get("anatomy") or [])


def _slice_side(record: dict) -> str | None:
    """The side of the midline a sagittal slice lies on; None for other slices and planar images."""
    side = record.get("slice_side")
    return side if side in SLICE_SIDES else None


def _named(roi: dict, record: dict) -> str:
    """'the liver tumour', or 'the region of the spleen' for an organ, which is not a finding."""
    return f"the region of the {roi['label']}" if _is_organ(roi, record) else f"the {roi['label']}"


def _described(words: str | None) -> str | None:
    """A descriptor's words, or None where the descriptor could not judge ("too small to characterise",
    "margin not assessable", "not measurable: ...")."""
    unjudged = ("too small", "not assessable", "not measurable")
    return words if words and not any(phrase in words for phrase in unjudged) else None


def _place(roi: dict, record: dict) -> str | None:
    """Where the region lies, with the side of the midline a sagittal slice lies on (its plane has no
    left or right), and never within itself."""
    location = roi.get("location")
    if not location:
        return None
    if _is_organ(roi, record):
        location = without_organ(location, roi["label"])
    location = on_side(location, _slice_side(record))
    return location + (f" ({roi['organ_location']})" if roi.get("organ_location") else "")


def _roi_location(roi: dict, record: dict) -> str:
    """E.g. 'A liver tumour measuring about 14 x 8 mm lies in the right anterior abdomen, within the
    liver, covering 4.0% of the image.'"""
    subject = f"a region of the {roi['label']}" if _is_organ(roi, record) else with_article(roi["label"])
    size = _described(roi.get("size"))
    measured = f"{capitalised(subject)}{f' measuring {size}' if size else ''}"
    share = f"{100 * roi['area_fraction']:.1f}% of the image"
    place = _place(roi, record)
    return f"{measured} lies in the {place}, covering {share}." if place else f"{measured} covers {share}."


def _appearance(roi: dict, record: dict) -> str:
    """E.g. 'The liver tumour is oval with a well-defined margin; it is hypodense relative to ...'. Shape
    and margin words the descriptors could not judge are left out, with their grammar."""
    shape, margin, texture = _described(roi.get("shape")), _described(roi.get("margin")), roi.get("texture")
    name = capitalised(_named(roi, record))
    if shape:
        looks = f"is {shape}" + (f" with {with_article(margin)}" if margin else "")
    else:
        looks = f"has {with_article(margin)}" if margin else None
    if looks and texture:
        return f"{name} {looks}; it is {texture}."
    if looks or texture:
        return f"{name} {looks or f'is {texture}'}."
    return f"No appearance is recorded for {_named(roi, record)}."


def _further(rois: list[dict]) -> str:
    """The regions past those described, counted and named: 'One further region is annotated: cyst.'"""
    if not rois:
        return ""
    labels = join_words(list(dict.fromkeys(roi["label"] for roi in rois)))
    count = "One further region is" if len(rois) == 1 else f"{len(rois)} further regions are"
    return f" {count} annotated: {labels}."


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


def _modality(record: dict) -> str:
    """E.g. 'Axial computed tomography (CT) slice; the patient's left is on the image right.', with a
    planar image's view ('X-ray radiograph image, PA view')."""
    text = image_kind(record, record["modality"])
    if record.get("view"):
        text += f", {record['view']} view"
    axes = patient_axes(record.get("patient_orientation"))
    return text + (f"; the patient's {FACING[axes[0]]} is on the image right." if axes else ".")


def _organ_tissue(record: dict) -> str:
    anatomy, organ, spacing = record.get("anatomy") or [], record.get("organ"), record.get("spacing_mm") or []
    if anatomy:
        text = f"The image shows the {join_words(anatomy)}."
    else:
        text = "No labelled organ is in view" + (f"; the image is of the {organ}." if organ else ".")
    if _slice_side(record) and not record.get("rois"):
        text += f" The slice lies {SLICE_SIDES[_slice_side(record)]}."
    if len(spacing) >= 2 and spacing[0] and spacing[1]:
        text += f" Pixel spacing {spacing[0]:.3g} x {spacing[1]:.3g} mm"
        text += f"; slice spacing {spacing[2]:.3g} mm." if len(spacing) > 2 and spacing[2] else "."
    return text


def _relationship(record: dict) -> str:
    """How the largest lesion lies among the organs in view and what it is annotated as; for organ-only
    regions, that they outline anatomy; without regions, what the image as a whole is labelled."""
    rois, anatomy, diseases = record.get("rois") or [], record.get("anatomy") or [], record.get("diseases") or []
    lesions = [roi for roi in rois if not _is_organ(roi, record)]
    if lesions:
        organ = record.get("organ") or "field of view"
        neighbours = [part for part in anatomy if part != organ]
        also = f", with the {join_words(neighbours)} also in view" if neighbours else ""
        verdict = (
            f"the appearance is consistent with the annotated {join_words(diseases)}"
            if diseases
            else "no disease is annotated"
        )
        return f"The largest region lies within the {organ}{also}; {verdict}."
    if rois:
        organs = list(dict.fromkeys(roi["label"] for roi in rois))
        outline = "The annotated region outlines" if len(rois) == 1 else "The annotated regions outline"
        others = [part for part in anatomy if part not in organs]
        also = f", with the {join_words(others)} also in view" if others else ""
        verdict = f"the image is labelled {join_words(diseases)}" if diseases else "no lesion or disease is annotated"
        return f"{outline} the {join_words(organs)} as anatomy{also}; {verdict}."
    labels = record.get("image_labels") or []
    if labels or diseases:
        others = [disease for disease in diseases if disease not in labels]
        labelled = f"labelled {join_words(labels)}" if labels else ""
        consistent = f"{', ' if labels else ''}consistent with {join_words(others)}" if others else ""
        return f"No region is marked; the image as a whole is {labelled}{consistent}."
    if anatomy:
        verb = "serves" if len(anatomy) == 1 else "serve"
        return f"No lesion is annotated; the {join_words(anatomy)} in view {verb} as anatomical context."
    return "Nothing on the image is annotated, so no region is related to its surroundings."


def describe(record: dict) -> dict[str, str]:
    rois = (record.get("rois") or [])[:MAX_ROIS_NAMED]
    sections = {"modality": _modality(record), "organ_tissue": _organ_tissue(record)}
    if rois:
        further = _further(record["rois"][MAX_ROIS_NAMED:])
        sections["roi_location"] = " ".join(_roi_location(roi, record) for roi in rois) + further
        sections["roi_texture"] = " ".join(_appearance(roi, record) for roi in rois)
    else:
        sections["roi_location"] = "No region of interest is annotated or located on this image."
        sections["roi_texture"] = "Not applicable: the image holds no annotated region."
    sections["region_relationship"] = _relationship(record) + background(record)
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
    reads_if_present = ("knowledge", "slice_side", "view")
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
