"""Whether a record's description agrees with the facts it was written from.

``read`` finds once per record what its description and its structured facts name; each check
takes that ``Reading`` and says whether the two agree; ``CHECKS`` names each check's column in the
gate's Great Expectations suite and the quarantine reason when it fails. What a text names
(modality, organ, disease, side) is found with fixed vocabularies and word boundaries: a check flags
a text that names something the facts do not hold, or that fails to name what they do. Background
quoted from a passage ('Background [id]: "..."') is the knowledge base's words, not a claim about
the image, and is left out of what the text names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from medtrinity_tasks.phi import PLACEHOLDER_TAGS, find_phi
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.roi.location import CENTRAL_BAND, OPPOSITE, WORDS, patient_axes
from medtrinity_tasks.validation.defects import ImageBounds

MODALITY_WORDS = {
    "CT": r"computed tomography|ct",
    "MR": r"magnetic resonance|mri?",
    "XR": r"radiograph\w*|x-ray|cxr",
    "MG": r"mammogra\w*",
    "XA": r"angiogra\w*",
    "NM": r"nuclear medicine|scintigra\w*|gamma camera",
    "PT": r"positron emission tomography|pet",
    "US": r"ultrasound|sonograph\w*",
    "dermoscopy": r"dermoscop\w*|dermatoscop\w*",
    "endoscopy": r"endoscop\w*|colonoscop\w*",
    "histopathology": r"histopatholog\w*|histolog\w*|whole-slide|h&e",
}
"""How a text names each modality (the catalog's and DICOM's codes); each pattern is matched as whole words."""
MODALITY_KIN = {
    **dict.fromkeys(("CR", "DX", "MG", "IO", "PX", "XA", "RF"), "XR"),
    "ES": "endoscopy", "SM": "histopathology", "GM": "histopathology",
}  # fmt: skip
"""DICOM codes a text may name by a kindred catalog modality's words: projection X-ray kinds are
radiographs ("X-ray mammography"), DICOM's endoscopy and microscopy the catalog's."""
ORGAN_WORDS = {
    "liver": "liver|hepatic", "spleen": "spleen|splenic", "kidney": "kidneys?|renal", "lung": "lungs?|pulmonary",
    "heart": "heart|cardiac", "brain": "brain|cerebral", "pancreas": "pancreas|pancreatic", "prostate": "prostate",
    "colon": "colon|colonic|colorectal", "stomach": "stomach|gastric", "bladder": "bladder",
    "gallbladder": "gallbladder", "duodenum": "duodenum|duodenal", "oesophagus": "oesophagus|esophagus",
    "aorta": "aorta|aortic", "adrenal gland": "adrenal", "hippocampus": "hippocamp(?:us|al)",
    "skin": "skin|cutaneous", "breast": "breasts?", "bone": "bones?|osseous", "rib": "ribs?",
    "clavicle": "clavicles?", "diaphragm": "diaphragm", "mediastinum": "mediastin(?:um|al)", "pleura": "pleura",
    "uterus": "uterus|uterine", "thyroid": "thyroid", "trachea": "trachea",
}  # fmt: skip
"""Each organ and the words (nouns and adjectives) that name it."""
SIDES = ("left", "right")
GENERIC_DISEASE_WORDS = {"lesion", "mass", "nodule", "tumour", "tumor", "cyst", "other", "disease", "finding",
                         "abnormality", "background", "no", "or", "devices", "support"}  # fmt: skip
"""A catalog disease made only of these words is too general to contradict anything."""
SIDE_MARGIN = 0.1
"""A ROI said to lie on one side must not lie beyond the central band on the other by more than this
share of the image (the body frame the words were judged in is not stored)."""
SIZE_TOLERANCE = (1.5, 0.25)
"""A size in the text agrees with a measured dimension within 1.5 mm or 25 %, whichever is larger."""
_BACKGROUND = re.compile(r'Background \[[^\]]*\]: "[^"]*"')
_CITATION = re.compile(r"\[([^\]\s]+)\]")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:(?:x|×|by)\s*(\d+(?:\.\d+)?)\s*)?(mm|cm)\b")
_ROI_SECTIONS = ("roi_location", "roi_texture", "region_relationship")


@dataclass(frozen=True)
class Vocabulary:
    """What the gate judges a record by: the catalog's words and the settings' image bounds."""

    diseases: tuple[str, ...]
    """Disease names specific enough that naming one the facts lack is a contradiction."""
    image_bounds: ImageBounds


@lru_cache(maxsize=8)
def vocabulary(diseases: tuple[str, ...], image_bounds: ImageBounds | None = None) -> Vocabulary:
    """The vocabulary of ``diseases``, with ``image_bounds`` or, unset, the bounds the settings declare."""
    specific = {d.lower() for d in diseases if not set(re.findall(r"[\w-]+", d.lower())) <= GENERIC_DISEASE_WORDS}
    return Vocabulary(diseases=tuple(sorted(specific)), image_bounds=image_bounds or ImageBounds.declared())


def catalog_vocabulary(settings) -> Vocabulary:
    """The disease names of every catalogued source's labels, and the settings' image bounds."""
    from medtrinity_tasks.sources.catalog import load_catalog

    names = {
        name
        for entry in load_catalog(settings).values()
        for label in entry.labels.values()
        if label.kind != "organ"
        for name in (label.disease, label.name)
        if name
    }
    return vocabulary(tuple(sorted(names)), ImageBounds.from_settings(settings))


def _find(patterns: dict[str, str], text: str) -> set[str]:
    return {name for name, pattern in patterns.items() if re.search(rf"\b(?:{pattern})\b", text, re.I)}


def named(text: str, vocab: Vocabulary) -> dict[str, set[str]]:
    """What ``text`` names: modalities, organs, sides and (specific) diseases."""
    lower = text.lower()
    return {
        "modality": _find(MODALITY_WORDS, text),
        "organ": _find(ORGAN_WORDS, text),
        "laterality": {side for side in SIDES if re.search(rf"\b{side}\b", lower)},
        "disease": {d for d in vocab.diseases if re.search(rf"\b{re.escape(d)}\b", lower)},
    }


def own_sections(row: dict, sections=DESCRIPTION_SECTIONS) -> dict[str, str]:
    """Each of the description's sections, without the background quoted from passages."""
    description = row.get("description") or {}
    return {name: _BACKGROUND.sub("", description.get(name) or "") for name in sections}


def own_text(row: dict, sections=DESCRIPTION_SECTIONS) -> str:
    """The description's sections as one text, without the background quoted from passages."""
    return " ".join(own_sections(row, sections).values())


def fact_text(row: dict) -> str:
    """Everything the record states about what the image shows, as one string."""
    parts = [row.get(name) or "" for name in ("organ", "coarse_caption", "view", "slice_side")]
    parts += list(row.get("anatomy") or []) + list(row.get("diseases") or []) + list(row.get("image_labels") or [])
    for roi in row.get("rois") or []:
        parts += [roi.get("label") or "", roi.get("location") or "", roi.get("organ_location") or ""]
    return " ; ".join(parts)


@dataclass(frozen=True)
class Reading:
    """A record and what its text and facts name, found once for all the checks."""

    row: dict
    text: str
    """The description's own text (``own_text``), lower-cased."""
    said: dict[str, set[str]]
    said_about_rois: dict[str, set[str]]
    """What the ROI sections name."""
    facts: dict[str, set[str]]


def read(row: dict, vocab: Vocabulary) -> Reading:
    text = own_text(row)
    return Reading(
        row=row,
        text=text.lower(),
        said=named(text, vocab),
        said_about_rois=named(own_text(row, _ROI_SECTIONS), vocab),
        facts=named(fact_text(row), vocab),
    )


def modality_agrees(reading: Reading) -> bool:
    """The text names no other modality than the record's and, where the record's has words, names it."""
    said, modality = reading.said["modality"], reading.row.get("modality")
    accepted = {modality, MODALITY_KIN.get(modality, modality)}
    return not (said - accepted or (accepted & MODALITY_WORDS.keys() and not said & accepted))


def organ_agrees(reading: Reading) -> bool:
    said, facts = reading.said["organ"], reading.facts["organ"]
    return not (said - facts or (facts and not said & facts))


def disease_agrees(reading: Reading) -> bool:
    """The text names none of the vocabulary's diseases that the facts lack and, where the record
    has diseases, one of them or one of the labels they were annotated as."""
    row = reading.row
    if reading.said["disease"] - reading.facts["disease"]:
        return False
    if not row.get("diseases"):
        return True
    labels = [*row["diseases"], *(row.get("image_labels") or []), *(roi["label"] for roi in row.get("rois") or [])]
    return any(re.search(rf"\b{re.escape(label.lower())}\b", reading.text) for label in labels if label)


def laterality_agrees(reading: Reading) -> bool:
    """The sides the ROI sections name are sides the facts hold."""
    return not reading.said_about_rois["laterality"] - reading.facts["laterality"]


def roi_location_agrees(reading: Reading) -> bool:
    """No ROI's side in words is the opposite of where its centroid lies."""
    row = reading.row
    orientation = patient_axes(row.get("patient_orientation"))
    if orientation is None:
        return True
    for roi in row.get("rois") or []:
        words = set(re.findall(r"\w+", (roi.get("location") or "").split(",")[0]))
        for fraction, direction in (
            ((roi["centroid_xy"][0] + 0.5) / row["width"], orientation[0]),
            ((roi["centroid_xy"][1] + 0.5) / row["height"], orientation[1]),
        ):
            low, high = CENTRAL_BAND
            if fraction < low - SIDE_MARGIN and WORDS[direction] in words:
                return False
            if fraction > high + SIDE_MARGIN and WORDS[OPPOSITE[direction]] in words:
                return False
    return True


def size_agrees(reading: Reading) -> bool:
    """Every size the ROI sections state matches a measured ROI dimension."""
    measured = [m for roi in reading.row.get("rois") or [] for m in roi.get("size_mm") or []]
    absolute, relative = SIZE_TOLERANCE
    for match in _SIZE.finditer(own_text(reading.row, _ROI_SECTIONS)):
        scale = 10.0 if match.group(3) == "cm" else 1.0
        for value in (match.group(1), match.group(2)):
            if value is None:
                continue
            size = float(value) * scale
            if not any(abs(size - m) <= max(absolute, relative * m) for m in measured):
                return False
    return True


def citations_known(reading: Reading) -> bool:
    """The passages the text cites are among those retrieved for the record."""
    row = reading.row
    text = " ".join((row.get("description") or {}).get(name) or "" for name in DESCRIPTION_SECTIONS)
    known = {passage["id"] for passage in row.get("knowledge") or []}
    cited = set(_CITATION.findall(text)) - PLACEHOLDER_TAGS
    return not cited - known


ROI_TEXT_FIELDS = ("label", "location", "image_location", "organ_location", "size", "shape", "margin", "texture")


def record_text(row: dict) -> str:
    """Every text column of a record that could carry personal data: what came from the source (its
    path, reference text, labels) and everything written from it, one field a line. Background quoted
    from a passage is the knowledge base's words; provenance, generator and quality are the project's."""
    description = row.get("description") or {}
    parts = [
        row.get(name) or "" for name in ("source_relpath", "sequence", "organ", "coarse_caption", "reference_text")
    ]
    parts += list(row.get("diseases") or []) + list(row.get("anatomy") or []) + list(row.get("image_labels") or [])
    parts += [roi.get(name) or "" for roi in row.get("rois") or [] for name in ROI_TEXT_FIELDS]
    parts += [_BACKGROUND.sub("", description.get(name) or "") for name in DESCRIPTION_SECTIONS]
    parts.append(_BACKGROUND.sub("", row.get("description_text") or ""))
    return "\n".join(part for part in parts if part)


def free_of_phi(reading: Reading) -> bool:
    return not find_phi(record_text(reading.row))


CHECKS = {
    "modality_agrees": (modality_agrees, "modality disagrees with the record"),
    "organ_agrees": (organ_agrees, "organ disagrees with the record"),
    "disease_agrees": (disease_agrees, "disease disagrees with the record"),
    "laterality_agrees": (laterality_agrees, "laterality disagrees with the ROI facts"),
    "roi_location_agrees": (roi_location_agrees, "ROI location disagrees with its box"),
    "size_agrees": (size_agrees, "size disagrees with the measured size"),
    "citations_known": (citations_known, "cites knowledge the record lacks"),
    "free_of_phi": (free_of_phi, "PHI-like text"),
}
"""Each check's column in the gate's suite: the check, and the quarantine reason when it fails."""
