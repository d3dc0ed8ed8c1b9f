"""The in-process runner: a failing batch is quarantined, rows standing for rejects go around a stage."""

from medtrinity_tasks.stages import run_inprocess
from tests.support.stages import ROWS, CountSetups, Explodes


def test_failing_batch_is_quarantined_and_the_rest_goes_on():
    out = run_inprocess([Explodes()], ROWS)
    assert len(out) == 6
    failed = sorted(r["source_relpath"] for r in out if r.get("quarantine_reasons"))
    assert failed == ["in/0", "in/1"]  # the whole batch of the failing row, with the reason
    assert out[0]["quarantine_reasons"] == ["explodes failed: ValueError: model crashed"]


def test_parked_rows_skip_later_stages():
    rows = [dict(ROWS[0], reject_reason="unreadable"), ROWS[1]]
    organs = {r["source_relpath"]: r.get("organ") for r in run_inprocess([CountSetups()], rows)}
    assert organs["in/0"] is None  # the rejected input went around the stage
    assert organs["in/1"].startswith("setup-pid-")  # while the stage did run on the live row
