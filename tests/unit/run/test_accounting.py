"""Each input's files and outcome: files counted once however inputs share them, and every input of a
run's work records given one row with its files, its records and, for a reject, its reason."""

from medtrinity_tasks.run.accounting import (
    LISTING,
    Counts,
    WorkRecord,
    file_counts,
    file_totals,
    input_outcomes,
)

SERIES_A = {
    "source_relpath": "series-a",
    "member_files": ["a/1.dcm", "a/2.dcm", "a/3.dcm"],
    "annotation_files": ["seg.dcm"],
}
SERIES_B = {"source_relpath": "series-b", "member_files": ["b/1.dcm", "b/2.dcm"], "annotation_files": ["seg.dcm"]}
REJECTED_FILE = {
    "source_relpath": "file-c",
    "scope": ["folder-x"],
    "reject_reason": "not an image",
    "reject_kind": "x",
}


def test_a_series_counts_its_images_and_annotations_and_a_shared_file_counts_once():
    counts = file_counts([SERIES_B, REJECTED_FILE, SERIES_A])
    assert counts == {"file-c": 1, "series-a": 4, "series-b": 2}  # the SEG both claim counts with the first
    assert sum(counts.values()) == len({"a/1.dcm", "a/2.dcm", "a/3.dcm", "b/1.dcm", "b/2.dcm", "seg.dcm", "file-c"})


def test_other_inputs_count_their_file_and_label_and_a_renamed_file_by_its_real_name():
    channels = [
        {"source_relpath": f"imagesTr/case_{c:04d}.nii.gz", "label_relpath": "labelsTr/case.nii.gz"} for c in (0, 1)
    ]
    renamed = {"source_relpath": "file-9f.png", "file_relpath": "DOE^JOHN.png", "label_relpath": None}
    assert file_counts([*channels, renamed, {"source_relpath": "images/a.png"}]) == {
        "imagesTr/case_0000.nii.gz": 2,
        "imagesTr/case_0001.nii.gz": 1,  # its label came with the first channel
        "file-9f.png": 1,
        "images/a.png": 1,
    }


def _works(records: dict | None = None) -> list[WorkRecord]:
    listing = WorkRecord(
        source_id="s", shard_id=LISTING, run_id="r", inputs=["file-c"], used=[],
        rejected=[{"input": "file-c", "reason": "not an image: RT Dose Storage", "kind": "not an image"}],
        quarantined=[], counts=Counts(inputs=1, rejected=1),
        files=file_counts([SERIES_A, SERIES_B, REJECTED_FILE, {"source_relpath": "series-d", "member_files": ["d"]}]),
    )  # fmt: skip
    shard = WorkRecord(
        source_id="s", shard_id="shard-00000", run_id="r", inputs=["series-a", "series-b", "series-d"],
        used=["series-a", "series-b"],
        rejected=[{"input": "series-d", "reason": "inconsistent series: two sizes", "kind": "inconsistent series"}],
        quarantined=[{"id": f"q{n}", "input": "series-b", "slice_index": n, "reasons": ["r"], "kinds": ["r"]}
                     for n in range(2)],
        counts=Counts(inputs=3, used=2, rejected=1, produced=5, records=3, quarantined=2),
        records=records,
    )  # fmt: skip
    return [listing, shard]


def test_file_totals_split_the_listed_files_by_their_inputs_outcome():
    assert file_totals(_works({"series-a": 3, "series-b": 0})) == {"files": 8, "used": 6, "rejected": 2}


def test_every_input_gets_one_row_with_its_files_records_and_reason():
    rows = {row["input"]: row for row in input_outcomes(_works({"series-a": 3, "series-b": 0}))}
    assert list(rows) == ["file-c", "series-a", "series-b", "series-d"]
    assert rows["series-a"] == {
        "input": "series-a", "files": 4, "outcome": "records", "records": 3, "quarantined": 0, "reason": None
    }  # fmt: skip
    assert rows["series-b"]["outcome"] == "quarantined" and rows["series-b"]["quarantined"] == 2
    assert rows["file-c"] == {
        "input": "file-c", "files": 1, "outcome": "rejected", "records": 0, "quarantined": 0,
        "reason": "not an image: RT Dose Storage",
    }  # fmt: skip
    assert rows["series-d"]["outcome"] == "rejected" and rows["series-d"]["reason"].startswith("inconsistent")


def test_work_records_round_trip_their_counts_and_say_what_they_did_not_keep():
    listing, shard = _works({"series-a": 3, "series-b": 0})
    assert [WorkRecord.from_json(w.to_json()) for w in (listing, shard)] == [listing, shard]
    assert "records" not in listing.to_json() and "files" not in shard.to_json()
    earlier = [WorkRecord.from_json({k: v for k, v in w.to_json().items() if k not in ("files", "records")})
               for w in (listing, shard)]  # fmt: skip
    assert file_totals(earlier) is None
    rows = {row["input"]: row for row in input_outcomes(earlier)}
    assert rows["series-a"]["outcome"] == "used" and rows["series-a"]["records"] is None
    assert rows["series-a"]["files"] is None and rows["file-c"]["outcome"] == "rejected"
