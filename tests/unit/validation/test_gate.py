import pytest

from medtrinity_tasks.validation.consistency import vocabulary
from medtrinity_tasks.validation.gate import SUITE_NAME, GateError, validate_records
from tests.support.records import make_record

VOCAB = vocabulary(("liver tumour",))


def test_valid_records_pass_with_quality_set():
    rows = [make_record(slice_index=i) for i in range(3)]
    passed, quarantined, _ = validate_records(rows, VOCAB)
    assert len(passed) == 3 and not quarantined
    assert all(r["quality"] == {"suite": SUITE_NAME, "passed": True, "failures": []} for r in passed)


def test_each_bad_record_is_quarantined_with_its_reason():
    good = make_record(slice_index=1)
    outside = make_record(slice_index=2)
    outside["rois"] = [dict(outside["rois"][0], bbox_xyxy=[70.0, 12.0, 95.0, 22.0])]  # width is 80
    empty_section = make_record(slice_index=3)
    empty_section["description"] = dict(empty_section["description"], roi_texture="")
    missing_section = make_record(slice_index=4)
    missing_section["description"] = dict(missing_section["description"], modality=None)
    no_caption = make_record(slice_index=5, coarse_caption=None)
    bad_area = make_record(slice_index=6)
    bad_area["rois"] = [dict(bad_area["rois"][0], area_fraction=1.5)]
    duplicate_a, duplicate_b = make_record(slice_index=7), make_record(slice_index=7)

    rows = [good, outside, empty_section, missing_section, no_caption, bad_area, duplicate_a, duplicate_b]
    passed, quarantined, _ = validate_records(rows, VOCAB)
    assert [r["slice_index"] for r in passed] == [1, 7]
    reasons = {(r["slice_index"], tuple(r["quarantine_reasons"])) for r in quarantined}
    assert reasons == {
        (2, ("ROI box outside the image",)),
        (3, ("description section roi_texture empty, missing or too long",)),
        (4, ("description section modality empty, missing or too long", "modality disagrees with the record")),
        (5, ("missing coarse_caption",)),
        (6, ("ROI area fraction not in (0, 1]",)),
        (7, ("duplicate id",)),
    }
    assert len(quarantined) == 6  # the repeat of an id only: ids address content, so it is the same image again
    assert all(r["quality"]["passed"] is False for r in quarantined)


def test_a_shard_missing_a_column_is_a_pipeline_bug_not_a_quarantine(monkeypatch):
    from medtrinity_tasks.validation import gate

    frame = gate.check_frame([make_record()], VOCAB).drop(columns=["provenance"])
    monkeypatch.setattr(gate, "check_frame", lambda _rows, _vocab: frame)
    with pytest.raises(GateError, match="provenance"):
        validate_records([make_record()], VOCAB)


def test_degenerate_images_are_quarantined_with_their_size_and_the_setting():
    strip = make_record(slice_index=1, width=16, height=1, rois=[])  # a single slice cut along an axis it lacks
    narrow = make_record(slice_index=2, width=400, height=40, rois=[])
    passed, quarantined, _ = validate_records([make_record(slice_index=0), strip, narrow], VOCAB)
    assert [r["slice_index"] for r in passed] == [0]
    assert all(r["quarantine_kinds"] == ["degenerate image"] for r in quarantined)
    assert {r["slice_index"]: r["quarantine_reasons"] for r in quarantined} == {
        1: ["degenerate image: 16 x 1 pixels: a side is shorter than 32 (MEDTRINITY_MIN_IMAGE_SIDE)"],
        2: ["degenerate image: 400 x 40 pixels: aspect ratio 10 is above 6 (MEDTRINITY_MAX_ASPECT_RATIO)"],
    }


def test_the_image_bounds_come_from_the_settings():
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.validation.consistency import catalog_vocabulary

    record = make_record()  # 80 x 64
    strict = catalog_vocabulary(load_settings({"MEDTRINITY_MIN_IMAGE_SIDE": "70"}))
    wide = catalog_vocabulary(load_settings({"MEDTRINITY_MAX_ASPECT_RATIO": "1.2"}))
    assert validate_records([record], catalog_vocabulary(load_settings({})))[0]
    assert validate_records([record], strict)[1][0]["quarantine_reasons"] == [
        "degenerate image: 80 x 64 pixels: a side is shorter than 70 (MEDTRINITY_MIN_IMAGE_SIDE)"
    ]
    assert validate_records([record], wide)[1][0]["quarantine_reasons"] == [
        "degenerate image: 80 x 64 pixels: aspect ratio 1.25 is above 1.2 (MEDTRINITY_MAX_ASPECT_RATIO)"
    ]


def test_template_defects_are_quarantined_whichever_engine_wrote_them():
    record = make_record()
    relation = "The largest region lies within the liver; the appearance is consistent with the annotated ."
    empty_slot = dict(record, id="a", description=dict(record["description"], region_relationship=relation))
    texture = "The liver tumour is with a well-defined margin; it is hypodense."
    is_with = dict(record, id="b", description=dict(record["description"], roi_texture=texture))
    quoted = 'The largest region lies within the liver. Background [p1]: "A  liver the the tumour ."'
    background = dict(
        record, id="c", description=dict(record["description"], region_relationship=quoted),
        knowledge=[{"id": "p1", "corpus": "demo", "title": "t", "score": 1.0, "text": "A  liver the the tumour ."}],
    )  # fmt: skip
    passed, quarantined, _ = validate_records([empty_slot, is_with, background], VOCAB)
    assert [r["id"] for r in passed] == ["c"]  # a passage's own words are the corpus's, not the engine's
    assert all(r["quarantine_kinds"] == ["description has a template defect"] for r in quarantined)
    assert {r["id"]: r["quarantine_reasons"] for r in quarantined} == {
        "a": ["description has a template defect: region_relationship: empty slot at 'ith the annotated .'"],
        "b": ["description has a template defect: roi_texture: 'is with' at 'he liver tumour is with a well-defined '"],
    }
