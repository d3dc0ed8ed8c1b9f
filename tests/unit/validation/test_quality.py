"""Quality validation: the gate's suite with its consistency columns on a seeded shard, reference
alignment on known pairs, and the run's report."""

from __future__ import annotations

import pytest

from medtrinity_tasks.validation.consistency import CHECKS, read, vocabulary
from medtrinity_tasks.validation.gate import SUITE_NAME, validate_records
from medtrinity_tasks.validation.reference import agreement, reference_summary, reference_totals, rouge_l
from tests.support.records import make_record

VOCAB = vocabulary(("liver tumour", "renal cyst", "melanoma", "lesion", "pneumothorax"))


def with_section(record: dict, name: str, text: str | None) -> dict:
    return dict(record, description=dict(record["description"], **{name: text}))


def seeded_shard() -> tuple[list[dict], dict[int, str]]:
    """Good records, and one bad record per check, by slice index with the reason it must get."""
    good = [make_record(slice_index=i) for i in range(3)]
    bad = {}

    def seed(index: int, reason: str, record: dict) -> None:
        bad[index] = reason
        good.append(record)

    record = make_record(slice_index=10)
    roi_location = record["description"]["roi_location"].replace("right anterior", "left anterior")
    seed(10, "laterality disagrees with the ROI facts", with_section(record, "roi_location", roi_location))
    seed(11, "description section roi_texture empty, missing or too long",
         with_section(make_record(slice_index=11), "roi_texture", None))  # fmt: skip
    record = make_record(slice_index=12)
    seed(
        12,
        "ROI box outside the image",
        dict(record, rois=[dict(record["rois"][0], bbox_xyxy=[70.0, 12.0, 95.0, 22.0])]),
    )
    record = make_record(slice_index=13)
    seed(13, "PHI-like text", dict(record, description_text=record["description_text"] + " Seen 03/04/2021."))
    record = make_record(slice_index=14)
    seed(14, "organ disagrees with the record",
         with_section(record, "organ_tissue", "The image shows the spleen and the kidney."))  # fmt: skip
    record = make_record(slice_index=15)
    roi_location = record["description"]["roi_location"].replace("14 x 8 mm", "140 x 80 mm")
    seed(15, "size disagrees with the measured size", with_section(record, "roi_location", roi_location))
    seed(16, "modality disagrees with the record",
         with_section(make_record(slice_index=16), "modality", "Axial magnetic resonance (MR) slice."))  # fmt: skip
    record = make_record(slice_index=17)
    relation = record["description"]["region_relationship"] + " A melanoma is also seen."
    seed(17, "disease disagrees with the record", with_section(record, "region_relationship", relation))
    record = make_record(slice_index=18)
    relation = record["description"]["region_relationship"] + " See [pubmed-123]."
    seed(18, "cites knowledge the record lacks", with_section(record, "region_relationship", relation))
    wrong_side = dict(make_record()["rois"][0], location="left anterior abdomen, within the liver")
    seed(19, "ROI location disagrees with its box", make_record(slice_index=19, rois=[wrong_side]))  # text from it
    duplicate = make_record(slice_index=2)  # the same id as a good record's
    duplicate["slice_index"] = 20
    seed(20, "duplicate id", duplicate)
    return good, bad


def test_a_seeded_shard_quarantines_exactly_the_bad_records_with_their_reasons():
    rows, bad = seeded_shard()
    assert set(bad.values()) >= {reason for _, reason in CHECKS.values()}  # every consistency check is seeded
    passed, quarantined, validation = validate_records(rows, VOCAB)
    assert sorted(r["slice_index"] for r in passed) == [0, 1, 2]
    assert {r["slice_index"]: r["quarantine_reasons"] for r in quarantined} == {i: [r] for i, r in bad.items()}
    assert all(r["quality"]["suite"] == SUITE_NAME and r["quality"]["passed"] for r in passed)
    assert all(r["quality"]["failures"] == r["quarantine_reasons"] for r in quarantined)
    assert validation.success is False and validation.statistics["evaluated_expectations"] > 20


def test_the_template_text_passes_its_own_checks_with_background_from_any_passage():
    passage = {"id": "p1", "corpus": "demo", "title": "t", "score": 1.0,
               "text": "A liver tumour may compress the left kidney, unlike a melanoma."}  # fmt: skip
    record = make_record(knowledge=[passage])
    assert (
        'Background [p1]: "A liver tumour may compress the left kidney, unlike a melanoma."'
        in (record["description"]["region_relationship"])
    )  # quoted background names another side, organ and disease: it is not the record's claim
    passed, quarantined, _ = validate_records([record], VOCAB)
    assert len(passed) == 1, quarantined and quarantined[0]["quarantine_reasons"]


def test_a_size_in_centimetres_is_compared_in_millimetres():
    record = make_record()
    ok = with_section(record, "roi_location", "A liver tumour of 1.4 x 0.8 cm in the right anterior abdomen.")
    off = with_section(record, "roi_location", "A liver tumour of 14 cm in the right anterior abdomen.")
    assert CHECKS["size_agrees"][0](read(ok, VOCAB)) and not CHECKS["size_agrees"][0](read(off, VOCAB))


def test_rouge_l_on_known_pairs():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("the cat sat", "the cat ran") == pytest.approx(2 / 3)
    assert rouge_l("a b c d", "x y") == 0.0 and rouge_l("", "x") == 0.0
    # LCS of "police killed the gunman" and "police kill the gunman" is 3 of 4 words each way
    assert rouge_l("police killed the gunman", "police kill the gunman") == pytest.approx(0.75)


def test_agreement_counts_only_what_the_human_text_names():
    description = "Frontal chest X-ray radiograph; a right pneumothorax in the right lung."
    assert agreement(description, "Right-sided pneumothorax. Lungs otherwise clear.", VOCAB) == {
        "modality": None, "organ": True, "laterality": True, "disease": True,
    }  # fmt: skip
    assert agreement(description, "Left pneumothorax on this CT.", VOCAB) == {
        "modality": False, "organ": None, "laterality": False, "disease": True,
    }  # fmt: skip


@pytest.mark.slow
def test_reference_scores_use_the_sentence_model_and_summarise_per_source():
    from medtrinity_tasks.validation.reference import score_references

    record = make_record()
    paraphrase = dict(
        record, reference_text="CT of the abdomen: an oval hypodense tumour in the right lobe of the liver."
    )
    unrelated = dict(record, id="other", reference_text="The patient's knee shows a healed fracture of the tibia.")
    plain = dict(record, id="plain", reference_text=None)
    scores = score_references([paraphrase, unrelated, plain], VOCAB)
    assert scores[2] is None  # no human text, no score
    assert scores[0]["similarity"] > scores[1]["similarity"] + 0.2
    assert scores[0]["rouge_l"] > scores[1]["rouge_l"]
    assert scores[0]["organ_agrees"] is True and scores[0]["modality_agrees"] is True
    summary = reference_summary([reference_totals(scores[:1]), reference_totals(scores[1:])])
    assert summary["records"] == 2 and summary["organ_agreement"] == 1.0
    assert summary["similarity"] == pytest.approx((scores[0]["similarity"] + scores[1]["similarity"]) / 2, abs=1e-3)


def test_a_disease_may_be_named_by_the_label_it_was_annotated_as():
    record = make_record(diseases=["hepatocellular carcinoma"])  # its ROI's label is "liver tumour"
    by_label = with_section(record, "region_relationship", "The liver tumour lies in the right lobe.")
    assert CHECKS["disease_agrees"][0](read(by_label, VOCAB))
    unnamed = dict(record, description={name: "A region of the liver." for name in record["description"]})
    assert not CHECKS["disease_agrees"][0](read(unnamed, VOCAB))


@pytest.mark.parametrize(
    "modality, text, agrees",
    [
        ("CR", "Computed radiography (CR) X-ray image.", True),
        ("DX", "Digital radiography (DX) X-ray image, PA view.", True),
        ("MG", "X-ray mammography (MG) image, left CC view.", True),
        ("ES", "Endoscopy (ES) image.", True),
        ("NM", "Nuclear medicine (NM) image.", True),
        ("PT", "Axial positron emission tomography (PET) slice.", True),
        ("SC", "Secondary capture (SC) image.", True),  # no words of its own: nothing to require
        ("CR", "Axial computed tomography (CT) slice.", False),
        ("MG", "Ultrasound (US) image.", False),
        ("XR", "X-ray mammography (MG) image.", False),  # a radiograph is not a mammogram
        ("NM", "Secondary capture (SC) image.", False),  # its own words are missing
    ],
)
def test_dicom_modalities_may_be_named_by_kindred_words(modality, text, agrees):
    record = with_section(make_record(modality=modality), "modality", text)
    assert CHECKS["modality_agrees"][0](read(record, VOCAB)) is agrees


def test_a_sagittal_slice_side_and_a_view_are_facts_the_text_may_name():
    roi = dict(make_record()["rois"][0], location="anterior superior brain")
    sagittal = make_record(axis="sagittal", patient_orientation=["P", "I"], slice_side="left", rois=[roi])
    assert "left anterior superior brain" in sagittal["description"]["roi_location"]
    assert CHECKS["laterality_agrees"][0](read(sagittal, VOCAB))
    unsided = dict(sagittal, slice_side=None)  # the same words without the fact they came from
    assert not CHECKS["laterality_agrees"][0](read(unsided, VOCAB))
