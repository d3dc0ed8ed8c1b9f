"""Failure records from the on-failure callback: what failed, without file paths, in the store."""

import json
import logging
from types import SimpleNamespace

from medtrinity_tasks.monitoring import failure_key, record_failure, without_paths
from medtrinity_tasks.storage import LocalStore


def _context(tmp_path, error: Exception, map_index: int = 3, output_uri: str | None = None) -> dict:
    ti = SimpleNamespace(
        dag_id="medtrinity__synthetic_ct_dicom",
        task_id="process",
        run_id="manual__2026-11-28T05:00:00+00:00",
        map_index=map_index,
        rendered_map_index="shard-00003" if map_index >= 0 else None,
        try_number=2,
        log_url="http://localhost:8080/dags/medtrinity__synthetic_ct_dicom/runs/x/tasks/process?map_index=3",
    )
    return {"ti": ti, "exception": error, "params": {"output_uri": output_uri or str(tmp_path / "out")}}


def test_failure_record_is_written_to_the_store_and_the_log(tmp_path, caplog):
    error = OSError("[Errno 21] Is a directory: '/data/Doe_Jane_PHI-12345/CT_00/series/IM0001.dcm'")
    context = _context(tmp_path, error)
    with caplog.at_level(logging.ERROR, logger="medtrinity_tasks.monitoring"):
        record_failure(context)
    store = LocalStore(tmp_path / "out")
    (key,) = store.list("sources/synthetic_ct_dicom/failures/")
    record = store.read_json(key)
    assert key == failure_key(record)
    assert record["source_id"] == "synthetic_ct_dicom" and record["shard_id"] == "shard-00003"
    assert record["task_id"] == "process" and record["try_number"] == 2 and record["error_class"] == "OSError"
    assert record["message"] == "[Errno 21] Is a directory: '<path>'"  # no folder names: they may hold PHI
    assert record["log_url"].startswith("http://localhost:8080/")
    assert "PHI-12345" not in caplog.text and "PHI-12345" not in json.dumps(record)
    assert '"error_class": "OSError"' in caplog.text  # the same record in the task log


def test_a_failing_callback_never_raises(tmp_path, caplog):
    (blocked := tmp_path / "blocked").write_text("a file where the output directory should be")
    with caplog.at_level(logging.ERROR, logger="medtrinity_tasks.monitoring"):
        record_failure(_context(tmp_path, ValueError("boom"), output_uri=str(blocked / "out")))
    assert "could not write the failure record" in caplog.text
    assert "the task's own error is above" in caplog.text


def test_unmapped_task_has_no_shard_and_paths_leave_uris_too():
    assert without_paths("cannot reach s3://bucket/Doe_Jane/x.dcm or /srv/a b") == "cannot reach <path> or <path> b"
    ti = SimpleNamespace(dag_id="medtrinity__x", task_id="plan", run_id="r", map_index=-1, rendered_map_index=None,
                         try_number=1, log_url=None)  # fmt: skip
    from medtrinity_tasks.monitoring import failure_record

    assert failure_record({"ti": ti, "exception": None})["shard_id"] is None
