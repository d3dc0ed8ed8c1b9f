"""Failure records from the on-failure callback: what failed, without file paths, in the store."""

import json
import logging
from types import SimpleNamespace

import pytest

from medtrinity_tasks.airflow_glue.failures import (
    failure_record,
    record_failure,
    record_unfinished_shards,
    without_paths,
)
from medtrinity_tasks.storage import LocalStore
from medtrinity_tasks.storage.shards import failure_key
from tests.support.servers import airflow_in_process


@pytest.fixture(autouse=True)
def airflow_config(airflow_home):
    """Records read Airflow's configuration (the log URL's base): the session's Airflow home, as every
    in-process use of Airflow has it."""
    with airflow_in_process(airflow_home) as patch:
        import airflow.configuration  # noqa: F401 - it sets up logging on import: before caplog takes the call's logs

        yield patch


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
    with caplog.at_level(logging.ERROR, logger="medtrinity_tasks.airflow_glue.failures"):
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
    with caplog.at_level(logging.ERROR, logger="medtrinity_tasks.airflow_glue.failures"):
        record_failure(_context(tmp_path, ValueError("boom"), output_uri=str(blocked / "out")))
    assert "could not write the failure record" in caplog.text
    assert "the task's own error is above" in caplog.text


def test_unmapped_task_has_no_shard_and_paths_leave_uris_too():
    assert without_paths("cannot reach s3://bucket/Doe_Jane/x.dcm or /srv/a b") == "cannot reach <path> or <path> b"
    ti = SimpleNamespace(dag_id="medtrinity__x", task_id="plan", run_id="r", map_index=-1, rendered_map_index=None,
                         try_number=1, log_url=None)  # fmt: skip
    assert failure_record({"ti": ti, "exception": None})["shard_id"] is None


@pytest.mark.parametrize(
    ("message", "scrubbed"),
    [
        ("/data/My Patients/DOE JOHN/x.dcm is unreadable", "<path> is unreadable"),
        ("cannot read C:\\Users\\x\\scan 1.dcm: truncated", "cannot read <path>: truncated"),
        ("cannot read 'C:\\\\Users\\\\DOE JOHN\\\\scan 1.dcm'", "cannot read '<path>'"),  # as repr() writes it
        ("copied from \\\\pacs01\\share\\DOE JOHN\\IM0001.dcm today", "copied from <path> today"),
        ("file:///mnt/DOE_JOHN/ct.nii.gz and s3://site-bucket/MRN-123456/x.dcm", "<path> and <path>"),
        ("DOE_JOHN_19700101.nii.gz is not NIfTI", "<file> is not NIfTI"),
        ("report 2019.csv row 3; mask DOE^JANE.PNG and scan.tiff.", "report <file> row 3; mask <file> and <file>."),
        ("relative DOE_JANE/series 2 is missing", "relative <path> 2 is missing"),
        ("label map is empty (2 of 3 slices)", "label map is empty (2 of 3 slices)"),
    ],
)
def test_paths_and_data_file_names_leave_messages(message, scrubbed):
    assert without_paths(message) == scrubbed
    for name in ("Patients", "JOHN", "JANE", "19700101", "MRN-123456", "pacs01", "Users"):
        assert name not in without_paths(message)


def test_log_url_comes_from_airflows_configured_base_url(tmp_path, airflow_config):
    airflow_config.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.org/ops/")
    record = failure_record(_context(tmp_path, ValueError("boom")))
    assert record["log_url"] == (
        "https://airflow.example.org/ops/dags/medtrinity__synthetic_ct_dicom/runs/"
        "manual__2026-11-28T05%3A00%3A00%2B00%3A00/tasks/process/mapped/3?try_number=2"
    )
    unmapped = failure_record(_context(tmp_path, ValueError("boom"), map_index=-1))
    assert unmapped["log_url"].endswith("/tasks/process?try_number=2")


def test_the_summary_records_each_shard_killed_before_it_could(tmp_path):
    """A shard task killed hard (SIGKILL, out of memory) runs no failure callback: the summary, which
    finds the shard unfinished, writes its record, unless the shard has one of this run already."""
    from medtrinity_tasks.run.publish import summarise_run

    out = str(tmp_path / "out")
    shards = ["shard-00000", "shard-00001", "shard-00002", "shard-00003"]
    record_failure(_context(tmp_path, OSError("disk full"), map_index=3, output_uri=out))  # shard 3 said why
    earlier = _context(tmp_path, OSError("disk full"), map_index=1, output_uri=out)
    earlier["ti"].run_id, earlier["ti"].rendered_map_index = "an-earlier-run", "shard-00001"
    record_failure(earlier)  # another run's record does not count
    report = summarise_run("synthetic_ct_dicom", shards, out)  # no shard finished: none wrote its work record
    assert report["unfinished_shards"] == shards
    summary_ti = SimpleNamespace(dag_id="medtrinity__synthetic_ct_dicom", run_id="manual__2026-11-28T05:00:00+00:00",
                                 task_id="summary")  # fmt: skip
    records = record_unfinished_shards({"ti": summary_ti}, shards, report["unfinished_shards"], out)
    assert [r["shard_id"] for r in records] == ["shard-00000", "shard-00001", "shard-00002"]
    store = LocalStore(out)
    for record in records:
        assert store.read_json(failure_key(record)) == record
        assert record["task_id"] == "process" and record["error_class"] == "TaskKilled"
        assert record["try_number"] is None
        assert failure_key(record).endswith(
            f"/manual__2026-11-28T05_00_00_00_00/process-{record['map_index']}-killed.json"
        )
        assert record["message"].startswith("the shard did not finish and no error was recorded")
        assert record["log_url"].endswith(f"/tasks/process/mapped/{record['map_index']}")
    assert records[1]["map_index"] == 1 and "/runs/manual__2026-11-28T05%3A00%3A00%2B00%3A00/" in records[1]["log_url"]
    assert record_unfinished_shards({"ti": summary_ti}, shards, report["unfinished_shards"], out) == []  # once
