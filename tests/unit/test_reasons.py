"""Reasons are (kind, text) pairs: rows carry both, work records keep both, and manifests count kinds."""

from __future__ import annotations

import pytest

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.reasons import Reason, quarantine_of, quarantined, reject_of, rejected
from medtrinity_tasks.run.accounting import Counts, WorkRecord, by_reason


def test_a_reason_reads_as_its_kind_then_its_detail():
    assert Reason.of("file is missing", "a.png") == Reason("file is missing", "file is missing: a.png")
    assert Reason.of("zero-byte file").text == "zero-byte file"
    assert Reason.of("output_invalid", "").text == "output_invalid: "  # an empty message is still said


def test_an_input_rejected_carries_its_reason_and_says_its_text():
    with pytest.raises(InputRejected, match="^file is missing: a.png$") as raised:
        raise InputRejected("file is missing", "a.png")
    assert raised.value.reason == Reason("file is missing", "file is missing: a.png")
    worded = InputRejected("no pixel data in file", text="no pixel data in slice_007.dcm")
    assert str(worded) == "no pixel data in slice_007.dcm" and worded.reason.kind == "no pixel data in file"


def test_rows_carry_kind_and_text_side_by_side():
    row = rejected({"source_relpath": "a.png"}, Reason.of("file is missing", "a.png"))
    assert row["reject_reason"] == "file is missing: a.png" and row["reject_kind"] == "file is missing"
    assert reject_of(row) == Reason.of("file is missing", "a.png") and reject_of({"source_relpath": "b"}) is None
    reasons = [Reason.of("PHI-like text"), Reason.of("slice_volumes failed", "ValueError: boom")]
    row = quarantined({"id": "r"}, reasons)
    assert row["quarantine_reasons"] == ["PHI-like text", "slice_volumes failed: ValueError: boom"]
    assert row["quarantine_kinds"] == ["PHI-like text", "slice_volumes failed"]
    assert quarantine_of(row) == reasons and quarantine_of({"id": "s"}) == []


def test_manifests_count_the_kinds_the_work_records_keep():
    work = WorkRecord(
        source_id="s",
        shard_id="shard-00000",
        run_id="run",
        inputs=["a", "b", "c"],
        used=["c"],
        rejected=[
            {
                "input": "a",
                "reason": "truncated pixel data in file-0123: 1 of 2 bytes",
                "kind": "truncated pixel data in file",
            },
            {
                "input": "b",
                "reason": "truncated pixel data in x.dcm: 3 of 4 bytes",
                "kind": "truncated pixel data in file",
            },
        ],
        quarantined=[
            {"id": "r", "input": "c", "slice_index": 0, "reasons": ["PHI-like text"], "kinds": ["PHI-like text"]}
        ],
        counts=Counts(inputs=3, used=1, rejected=2, produced=1, records=0, quarantined=1),
    )
    assert WorkRecord.from_json(work.to_json()) == work
    assert by_reason([work]) == {
        "rejected_by_reason": {"truncated pixel data in file": 2},
        "quarantined_by_reason": {"PHI-like text": 1},
    }
