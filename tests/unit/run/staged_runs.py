"""A run of the DICOM sample source as its shards leave it in a local store: the listing's work record with
every listed input's files, one shard's work record and files, and the run's lease, ready for the gate."""

from pathlib import Path

from medtrinity_tasks.run.accounting import LISTING, Counts, ShardSummary, WorkRecord, file_counts
from medtrinity_tasks.storage.lease import take_lease
from medtrinity_tasks.storage.shards import shard_key, work_key
from medtrinity_tasks.storage.store import LocalStore

SOURCE = "synthetic_ct_dicom"  # its catalog entry asks for a pass rate of 0.9
RUN = "manual__20260101T000000-abcdef"
LISTED = [
    {
        "source_relpath": "series-a",
        "member_files": ["a/1.dcm", "a/2.dcm", "a/3.dcm"],
        "annotation_files": ["a/seg.dcm"],
    },
    {"source_relpath": "series-b", "member_files": ["b/1.dcm", "b/2.dcm"], "annotation_files": []},
    {"source_relpath": "series-d", "member_files": ["d/1.dcm"], "annotation_files": []},
    {"source_relpath": "file-c"},
]
"""Eight files: two used series, a series the slicer rejects and a file the listing rejects."""
DOSE = {"input": "file-c", "reason": "not an image: RT Dose Storage", "kind": "not an image"}
SIZES = {"input": "series-d", "reason": "inconsistent series: frames of two sizes", "kind": "inconsistent series"}


def stage_run(out: Path, passed: int, quarantined: int) -> list[dict]:
    """The store after plan and shard, with ``passed`` records of series-a and ``quarantined`` of series-b;
    returns the shard summaries the gate is handed. A shard an earlier plan left is there too."""
    store = LocalStore(str(out))
    take_lease(store, SOURCE, RUN, 600)
    listing = WorkRecord(
        source_id=SOURCE, shard_id=LISTING, run_id=RUN, inputs=["file-c"], used=[], rejected=[DOSE],
        quarantined=[], counts=Counts(inputs=1, rejected=1), files=file_counts(LISTED),
    )  # fmt: skip
    why = {"reasons": ["PHI-like text: a date"], "kinds": ["PHI-like text"]}
    held = [{"id": f"q{n}", "input": "series-b", "slice_index": n, **why} for n in range(quarantined)]
    shard = WorkRecord(
        source_id=SOURCE, shard_id="shard-00000", run_id=RUN, inputs=["series-a", "series-b", "series-d"],
        used=["series-a", "series-b"], rejected=[SIZES], quarantined=held,
        counts=Counts(inputs=3, used=2, rejected=1, produced=passed + quarantined, records=passed,
                      quarantined=quarantined),
        records={"series-a": passed, "series-b": 0}, engine="template",
    )  # fmt: skip
    for work in (listing, shard):
        store.write_json(work_key(SOURCE, work.shard_id), work.to_json())
    store.write_bytes(shard_key(SOURCE, "shard-00000"), b"records")
    store.write_bytes(shard_key(SOURCE, "shard-00007"), b"an earlier plan's shard")
    return [ShardSummary.of(shard, skipped=False).to_json()]
