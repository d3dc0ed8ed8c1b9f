from medtrinity_tasks.generation.template import PROMPT_VERSION, TemplateDescription, describe
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from tests.support.records import make_record


def test_five_non_empty_sections_grounded_in_the_facts():
    record = make_record()
    sections = record["description"]
    assert list(sections) == list(DESCRIPTION_SECTIONS)
    assert all(text.strip() for text in sections.values())
    assert "computed tomography" in sections["modality"]
    assert "patient's left is on the image right" in sections["modality"]
    assert "kidney and liver" in sections["organ_tissue"]
    assert (
        "liver tumour measuring about 14 x 8 mm lies in the right anterior abdomen, within the liver"
        in sections["roi_location"]
    )
    assert "4.0% of the image" in sections["roi_location"]
    assert sections["roi_texture"] == (
        "The liver tumour is oval with a well-defined margin; "
        "it is hypodense relative to the surrounding tissue, homogeneous."
    )
    assert "within the liver" in sections["region_relationship"]
    assert "annotated liver tumour" in sections["region_relationship"]
    assert record["generator"] == {"engine": "template", "model": "none", "prompt_version": PROMPT_VERSION}
    assert record["description_text"].splitlines()[0].startswith("Modality: ")
    assert len(record["description_text"].splitlines()) == 5


def test_the_text_depends_on_the_facts_alone():
    one = make_record()
    elsewhere = dict(one, id="another-id", source_relpath="case_7/imaging.nii.gz", description_text=None)
    batch = TemplateDescription().process_batch([elsewhere, one])  # neither name nor batch position shows
    assert batch[0]["description_text"] == batch[1]["description_text"] == one["description_text"]
    assert "case_7" not in batch[0]["description_text"]


def test_slice_without_roi_still_has_every_section():
    record = make_record(rois=[], diseases=[], organ="abdomen")
    assert all(record["description"][name] for name in DESCRIPTION_SECTIONS)
    assert "No region of interest" in record["description"]["roi_location"]


def test_organ_relative_words_join_the_location():
    roi = dict(make_record()["rois"][0], location="right posterior chest", organ_location="right lung, peripheral")
    assert "right posterior chest (right lung, peripheral)" in describe(make_record(rois=[roi]))["roi_location"]


def test_a_laterality_change_changes_the_text():
    left = make_record(rois=[dict(make_record()["rois"][0], location="left posterior abdomen, within the spleen")])
    assert "left posterior abdomen" in describe(left)["roi_location"]
    assert TemplateDescription().needs_actor is False


def passage(pid: str, text: str) -> dict:
    return {"id": pid, "corpus": "demo", "title": pid, "score": 1.0, "text": text}


def test_background_quotes_the_best_ranked_passage_that_names_the_disease_and_cites_it():
    knowledge = [
        passage("kidney-1", "The kidneys lie in the retroperitoneum. Renal cysts are common."),
        passage("liver-7", "The liver is the largest solid organ. A liver tumour may be primary or metastatic."),
        passage("liver-9", "Any liver tumour is staged by size."),
    ]
    text = describe(make_record(knowledge=knowledge))["region_relationship"]
    assert text.endswith('Background [liver-7]: "A liver tumour may be primary or metastatic."')


def test_background_falls_back_to_the_organ_and_is_left_out_when_no_passage_names_either():
    organ_only = [passage("liver-1", "Hepatic lesions vary. The liver has eight segments.")]
    assert describe(make_record(knowledge=organ_only))["region_relationship"].endswith(
        'Background [liver-1]: "The liver has eight segments."'
    )
    unrelated = [passage("skin-1", "Melanoma arises from melanocytes.")]
    assert "Background" not in describe(make_record(knowledge=unrelated))["region_relationship"]
    assert "Background" not in describe(make_record(knowledge=[]))["region_relationship"]
