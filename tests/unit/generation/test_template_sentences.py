"""The template writes grammatical sentences for every kind of label and every combination of present
and missing facts: organ-only regions, lesions with and without a disease, image-level labels, no
region at all; shape, margin, size and texture words present or not; sagittal slices with their side,
planar images with their view. Records are drawn from the catalog's own labels, diseases and body
regions, with locations from the location words' own function, and every description must pass the
gate's defect and consistency checks."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medtrinity_tasks.generation.prompt import SECTION_MAX_CHARS
from medtrinity_tasks.generation.template import SLICE_SIDES, TemplateDescription, describe
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.roi.location import describe_location
from medtrinity_tasks.sources.catalog import load_catalog
from medtrinity_tasks.validation.consistency import CHECKS, own_sections, read, vocabulary
from medtrinity_tasks.validation.defects import section_defects
from tests.support.records import make_record

CATALOG = load_catalog()
LABELS = [label for entry in CATALOG.values() for label in entry.labels.values()]
ORGANS = sorted({label.name for label in LABELS if label.kind == "organ"})
FINDINGS = sorted({label.name for label in LABELS if label.kind != "organ"})
DISEASES = sorted({label.disease for label in LABELS if label.disease})
REGIONS = sorted({entry.body_region for entry in CATALOG.values()})
VOCAB = vocabulary(tuple(DISEASES + FINDINGS))

SHAPES = [None, "too small to characterise", "irregular", "round", "oval", "elongated"]
MARGINS = [None, "well-defined margin", "ill-defined margin", "margin not assessable"]
TEXTURES = [
    None,
    "hypodense relative to the surrounding tissue (about 40 HU against 120 HU), homogeneous",
    "of undetermined contrast (about 35 HU), heterogeneous",
    "hyperintense relative to the surrounding tissue, homogeneous",
    "more opaque than the surrounding tissue, heterogeneous",
    "darker than the surrounding tissue, homogeneous",
    "not measurable: the box lies outside the image",
]
"""What the descriptors write (roi/descriptors.py), and None where a region carries no words."""
PLANAR_ORIENTATIONS = [None, ["L", "F"], ["R", "H"], ["A", "F"]]
VIEWS = [None, "PA", "AP", "left CC", "right MLO", "lateral"]
WIDTH, HEIGHT = 80, 64


@st.composite
def regions(draw, label: str, organ: str | None, region: str, orientation) -> dict:
    x, y = draw(st.floats(0, WIDTH - 1)), draw(st.floats(0, HEIGHT - 1))
    measured = draw(st.sampled_from(["mm", "pixels", "not measurable", None]))
    major, minor = draw(st.integers(2, 60)), draw(st.integers(1, 2))
    size = {
        "mm": f"about {major} x {minor} mm",
        "pixels": f"about {major} x {minor} pixels",
        "not measurable": "not measurable: the box lies outside the image",
    }.get(measured)
    located = draw(st.booleans())  # a region always has a location; the template copes without one
    return {
        "label": label,
        "bbox_xyxy": [max(x - 2, 0.0), max(y - 2, 0.0), min(x + 2, WIDTH), min(y + 2, HEIGHT)],
        "area_fraction": draw(st.floats(0.001, 0.9)),
        "centroid_xy": [x, y],
        "location": describe_location((x, y), WIDTH, HEIGHT, orientation, region, organ) if located else None,
        "organ_location": draw(st.sampled_from([None, "right lung, peripheral", "left hemisphere, cortical"]))
        if located
        else None,
        "size": size,
        "size_mm": [float(major), float(minor)] if measured == "mm" else None,
        "shape": draw(st.sampled_from(SHAPES)),
        "margin": draw(st.sampled_from(MARGINS)),
        "texture": draw(st.sampled_from(TEXTURES)),
        "origin": "annotation",
    }


@st.composite
def records(draw) -> dict:
    """A record as the description stage receives it, from any combination of facts."""
    axis = draw(st.sampled_from(["axial", "coronal", "sagittal", "image"]))
    orientation = (
        draw(st.sampled_from(PLANAR_ORIENTATIONS))
        if axis == "image"
        else {"axial": ["L", "P"], "coronal": ["L", "I"], "sagittal": ["P", "I"]}[axis]
    )
    region = draw(st.sampled_from(REGIONS))
    anatomy = draw(st.lists(st.sampled_from(ORGANS), unique=True, max_size=3))
    organ_only = bool(anatomy) and draw(st.booleans())
    rois = []
    for _ in range(draw(st.integers(0, 5))):
        if organ_only:
            label = organ = draw(st.sampled_from(anatomy))
        else:
            label, organ = draw(st.sampled_from(FINDINGS)), draw(st.sampled_from([*anatomy, region, None]))
        rois.append(draw(regions(label, organ, region, orientation)))
    rois.sort(key=lambda roi: -roi["area_fraction"])
    spacing = draw(st.sampled_from([None, [0.8, 0.7, 2.5], [0.2, 0.2, None], [0.14, 0.14]]))
    return {
        "modality": draw(st.sampled_from(["CT", "MR", "XR", "CR", "MG", "US", "NM", "dermoscopy"])),
        "sequence": draw(st.sampled_from([None, "FLAIR", "T1w"])),
        "axis": axis,
        "patient_orientation": orientation,
        "slice_side": draw(st.sampled_from([None, *SLICE_SIDES])) if axis == "sagittal" else None,
        "view": draw(st.sampled_from(VIEWS)) if axis == "image" else None,
        "spacing_mm": spacing,
        "anatomy": anatomy,
        "organ": (rois[0]["label"] if organ_only and rois else draw(st.sampled_from([*anatomy, region, None]))),
        "rois": rois,
        "image_labels": [] if rois else draw(st.lists(st.sampled_from(FINDINGS), unique=True, max_size=2)),
        "diseases": [] if organ_only else draw(st.lists(st.sampled_from(DISEASES), unique=True, max_size=2)),
        "width": WIDTH,
        "height": HEIGHT,
    }


def roi_sentences(record: dict) -> list[str]:
    """The location sentence of each ROI the text names, in order."""
    return describe(record)["roi_location"].split("of the image.")[: min(len(record["rois"]), 3)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=records())
def test_every_combination_of_facts_reads_as_clean_sentences(record):
    sections = describe(record)
    described = dict(record, description=sections)
    assert all(0 < len(sections[name]) <= SECTION_MAX_CHARS for name in DESCRIPTION_SECTIONS)
    assert section_defects(own_sections(described)) is None, sections
    assert "None" not in " ".join(sections.values())
    reading = read(described, VOCAB)
    failed = [name for name, (check, _) in CHECKS.items() if name != "free_of_phi" and not check(reading)]
    assert not failed, (failed, sections)


@settings(max_examples=200, deadline=None)
@given(record=records())
def test_an_organ_is_never_its_own_location_and_sides_and_views_are_stated(record):
    sections = describe(record)
    for roi, sentence in zip(record["rois"], roi_sentences(record), strict=False):
        if roi["label"] in record["anatomy"]:
            assert f"within the {roi['label']}" not in sentence
            assert sentence.strip().startswith(f"A region of the {roi['label']}")
        if record["slice_side"] and roi["location"]:
            assert record["slice_side"] in sentence.split(",")[0]
    if record["slice_side"] and not record["rois"]:
        assert f"The slice lies {SLICE_SIDES[record['slice_side']]}." in sections["organ_tissue"]
    if record["view"]:
        assert f", {record['view']} view" in sections["modality"]
    if not record["rois"]:
        assert sections["roi_location"] == "No region of interest is annotated or located on this image."
    elif all(roi["label"] in record["anatomy"] for roi in record["rois"]):
        assert "as anatomy" in sections["region_relationship"]
        assert "consistent with" not in sections["region_relationship"]


def organ_only(**roi_words) -> dict:
    """A Decathlon-style organ-only record (an MR template's white matter), as the issue's run wrote it."""
    roi = dict(
        make_record()["rois"][0],
        label="white matter",
        location="posterior superior brain, within the white matter",
        texture="hyperintense relative to the surrounding tissue, homogeneous",
        **roi_words,
    )
    return make_record(
        modality="MR", axis="sagittal", patient_orientation=["P", "I"], organ="white matter",
        anatomy=["grey matter", "white matter"], diseases=[], rois=[roi],
    )  # fmt: skip


def test_an_organ_only_region_is_anatomy_not_a_disease():
    sections = organ_only()["description"]
    assert "annotated ." not in sections["region_relationship"]
    assert sections["region_relationship"] == (
        "The annotated region outlines the white matter as anatomy, with the grey matter also in view; "
        "no lesion or disease is annotated."
    )
    assert sections["roi_location"].startswith("A region of the white matter measuring about 14 x 8 mm lies in the ")
    assert "within the white matter" not in sections["roi_location"]


def test_margin_words_take_their_article_and_a_missing_shape_leaves_no_is_with():
    ill = organ_only(margin="ill-defined margin", shape="oval")["description"]["roi_texture"]
    assert ill.startswith("The region of the white matter is oval with an ill-defined margin; it is hyperintense")
    unshaped = organ_only(margin="well-defined margin", shape="too small to characterise")["description"]
    assert unshaped["roi_texture"].startswith("The region of the white matter has a well-defined margin; it is ")
    bare = organ_only(margin="margin not assessable", shape="too small to characterise")["description"]
    assert bare["roi_texture"] == (
        "The region of the white matter is hyperintense relative to the surrounding tissue, homogeneous."
    )


def test_a_sagittal_slice_states_its_side_of_the_midline():
    left = TemplateDescription().process_batch([dict(organ_only(), slice_side="left")])[0]["description"]
    assert "lies in the left posterior superior brain" in left["roi_location"]
    no_roi = dict(organ_only(), slice_side="midline", rois=[], anatomy=[], organ="brain")
    assert (
        "No labelled organ is in view; the image is of the brain. The slice lies at the midline."
        in (describe(no_roi)["organ_tissue"])
    )
    assert "left" not in describe(dict(organ_only(), slice_side=None))["roi_location"]


def test_a_planar_image_states_its_view_and_a_lesion_its_article():
    record = make_record(
        modality="XR", axis="image", view="PA", patient_orientation=["L", "F"], spacing_mm=[0.2, 0.2, None],
        rois=[dict(make_record()["rois"][0], label="ill-defined opacity", location="right lower chest")],
    )  # fmt: skip
    assert record["description"]["modality"] == (
        "X-ray radiograph image, PA view; the patient's left is on the image right."
    )
    assert record["description"]["roi_location"].startswith("An ill-defined opacity measuring about 14 x 8 mm")
    assert "Pixel spacing 0.2 x 0.2 mm." in record["description"]["organ_tissue"]


def test_further_regions_are_counted_in_words_and_named():
    rois = [dict(make_record()["rois"][0], area_fraction=0.01 * (9 - i)) for i in range(5)]
    rois[4] = dict(rois[4], label="renal cyst")
    four = describe(make_record(rois=rois[:4]))["roi_location"]
    assert four.endswith(" One further region is annotated: liver tumour.")
    assert describe(make_record(rois=rois))["roi_location"].endswith(
        " 2 further regions are annotated: liver tumour and renal cyst."
    )


def test_a_record_with_nothing_annotated_says_so_plainly():
    sections = make_record(rois=[], anatomy=[], diseases=[], image_labels=[], organ="chest")["description"]
    assert sections["roi_location"] == "No region of interest is annotated or located on this image."
    assert sections["region_relationship"] == (
        "Nothing on the image is annotated, so no region is related to its surroundings."
    )
    labelled = make_record(rois=[], anatomy=[], diseases=["melanoma"], image_labels=["melanoma"], organ="skin")
    assert labelled["description"]["region_relationship"] == (
        "No region is marked; the image as a whole is labelled melanoma."
    )
