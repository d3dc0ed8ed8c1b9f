"""The defect check finds every mark a template leaves when a slot is empty or its grammar does not fit
the words, including each defect a real run wrote, and passes good prose: the template's and a
language model's."""

from __future__ import annotations

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.validation.defects import ImageBounds, section_defects, text_defects
from tests.support.records import make_record

WRITTEN_ON_A_REAL_MRI_TEMPLATE = [
    "The largest region lies within the white matter; the appearance is consistent with the annotated .",
    "The white matter is round with a ill-defined margin; hyperintense relative to the surrounding tissue.",
    "The white matter is with a well-defined margin; hyperintense relative to the surrounding tissue, homogeneous.",
]
"""Sentences the template wrote for an organ-only MRI template in the Decathlon layout (issue 17)."""


@pytest.mark.parametrize(
    "text, defect",
    [
        (WRITTEN_ON_A_REAL_MRI_TEMPLATE[0], "empty slot"),
        (WRITTEN_ON_A_REAL_MRI_TEMPLATE[1], "'a' before 'ill-defined'"),
        (WRITTEN_ON_A_REAL_MRI_TEMPLATE[2], "'is with'"),
        ("The image shows the  and kidney.", "empty slot"),
        ("The image shows the , kidney and liver.", "empty slot"),
        ("A lesion lies in the (), covering 4% of the image.", "empty slot"),
        ("A lesion measuring None lies in the {place}.", "empty slot"),
        ("It lies within the the liver.", "doubled word"),
        ("The region is round; round round margins.", "doubled word"),
        ("The margin is a .", "dangling article"),
        ("It has a, well, margin.", "dangling article"),
        ("It lies in the; here.", "dangling article"),
        ("The region lies within the", "dangling article"),
        ("It lies within the and the liver.", "dangling article"),
        ("An uterine mass lies in the pelvis.", "'an' before 'uterine'"),
        ("It is a MR slice.", "'a' before 'MR'"),
        ("An CT slice.", "'an' before 'CT'"),
        ("A 8 mm nodule.", "'a' before '8'"),
        ("The lesions are with a sharp margin.", "'is with'"),
    ],
)
def test_each_kind_of_defect_is_found(text, defect):
    assert defect in [found for found, _ in text_defects(text)]


GOOD_PROSE = [
    # the template's own sentences
    "Axial computed tomography (CT) slice; the patient's left is on the image right.",
    "The liver tumour is oval with a well-defined margin; it is hypodense relative to the surrounding tissue "
    "(about 40 HU against 120 HU), homogeneous.",
    "An ill-defined opacity measuring about 14 x 8 mm lies in the right lower chest, covering 4.0% of the image.",
    "A region of the white matter measuring about 8.5 x 2.0 mm lies in the left posterior superior brain.",
    # what a language model writes
    "Frontal chest radiograph (PA view). An ill-defined opacity is seen in the right lower zone, approximately "
    "2.5 cm, with a well-defined inferior margin. No pleural effusion. The heart is not enlarged; an MRI or a CT "
    "may help, and a US-guided biopsy could follow.",
    "Sagittal T2-weighted MR image of the brain: a FLAIR-hyperintense focus, an 8 mm lesion, lies in the "
    "periventricular white matter, e.g. near the left lateral ventricle. It had had a one-off biopsy in an "
    "hour-long session; a unilateral, uniform signal is noted.",
    "Hepatitis A, vitamin A and type A dissection are unrelated. The lesion, i.e. the mass, is 11 mm.  A second "
    "sentence after two spaces is fine. An historic or a historic note; an HCC or a HCC; a European protocol.",
    "Ultrasound (US) image: an anechoic cyst with a thin wall and an 18-gauge needle track; a uterine fibroid "
    "is seen, and an X-ray, an H&E stain and an FDG-avid node are mentioned.",
    "1.  The finding is stable. 2.  No new lesion. The question is what it is; that that region enhances is "
    "clear. Findings: none.",
]


@pytest.mark.parametrize("text", GOOD_PROSE)
def test_good_prose_has_no_defect(text):
    assert text_defects(text) == []


def test_every_defect_the_real_run_wrote_is_named_by_section():
    sections = dict(
        zip(("region_relationship", "roi_texture", "organ_tissue"), WRITTEN_ON_A_REAL_MRI_TEMPLATE, strict=True)
    )
    found = section_defects(sections)
    assert found.startswith("region_relationship: empty slot at 'ith the annotated .'")
    assert "; roi_texture: 'a' before 'ill-defined' at " in found
    assert "; organ_tissue: 'is with' at 'he white matter is with a well-defined '" in found
    assert section_defects(make_record()["description"]) is None


def test_degenerate_images_are_too_small_or_too_narrow():
    bounds = ImageBounds.declared()
    assert (bounds.min_side, bounds.max_aspect_ratio) == (32, 6.0)  # the settings' declared defaults
    assert bounds.degeneracy(1, 16) == "1 x 16 pixels: a side is shorter than 32 (MEDTRINITY_MIN_IMAGE_SIDE)"
    assert bounds.degeneracy(400, 64) == ("400 x 64 pixels: aspect ratio 6.25 is above 6 (MEDTRINITY_MAX_ASPECT_RATIO)")
    assert bounds.degeneracy(32, 32) is None and bounds.degeneracy(512, 170) is None  # a full-spine radiograph
    strict = ImageBounds.from_settings(
        load_settings({"MEDTRINITY_MIN_IMAGE_SIDE": "64", "MEDTRINITY_MAX_ASPECT_RATIO": "2"})
    )
    assert strict.degeneracy(63, 80) and strict.degeneracy(200, 90) and strict.degeneracy(80, 64) is None
