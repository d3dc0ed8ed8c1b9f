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
