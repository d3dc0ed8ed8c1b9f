"""`medtrinity show` on the manifest a run leaves, published or not: totals of inputs, records and files,
the gate's verdict, and with --inputs one line (or one JSON object) per input."""

import json

import pytest

from medtrinity_tasks.cli import main
from medtrinity_tasks.run.publish import GateFailed, gate_source, publish_source
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore
from tests.unit.run.staged_runs import SOURCE, stage_run


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_OUTPUT", str(tmp_path / "out"))
    return tmp_path / "out"


def test_show_reads_the_manifest_of_a_run_whose_gate_failed(out, capsys):
    with pytest.raises(GateFailed):
        gate_source(SOURCE, stage_run(out, passed=3, quarantined=2))
    assert main(["show", SOURCE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        f"{SOURCE}: 3 records passed, none published, 2 quarantined, 2 of 4 inputs rejected",
        "files: 8 (6 used, 2 rejected)",
        f"manifest: {out / 'sources' / SOURCE / 'manifest.json'}",
    ]
    assert f"quality gate failed: {SOURCE}: pass rate 0.60 is below the threshold 0.90" in "\n".join(lines)
    assert not any(line.startswith("shard: ") for line in lines)


def test_show_inputs_gives_each_input_one_line_with_files_outcome_and_reason(out, capsys):
    summaries = stage_run(out, passed=9, quarantined=1)  # a pass rate of 0.9: just enough
    publish_source(SOURCE, summaries, None, gate_source(SOURCE, summaries))
    capsys.readouterr()
    assert main(["show", SOURCE, "--inputs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{SOURCE}: 9 records in shards, 1 quarantined, 2 of 4 inputs rejected"
    assert lines[-4:] == [
        "file-c: 1 file, rejected: not an image: RT Dose Storage",
        "series-a: 4 files, 9 records, 0 quarantined",
        "series-b: 2 files, 0 records, 1 quarantined",
        "series-d: 1 file, rejected: inconsistent series: frames of two sizes",
    ]
    assert main(["show", SOURCE, "--inputs", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == LocalStore(str(out)).read_json(manifest_key(SOURCE))["inputs"] and len(rows) == 4


def test_show_without_a_manifest_or_with_one_from_an_earlier_build(out, capsys):
    assert main(["show", SOURCE]) == 2
    assert "run the source first" in capsys.readouterr().err
    earlier = {"counts": {"inputs": 1, "used": 1, "rejected": 0, "produced": 2, "records": 2, "quarantined": 0},
               "shards": [], "rejected": [], "quarantined": []}  # fmt: skip
    LocalStore(str(out)).write_json(manifest_key(SOURCE), earlier)
    assert main(["show", SOURCE]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"{SOURCE}: 2 records in shards, 0 quarantined, 0 of 1 inputs rejected",
        "files: not counted",
    ]
    assert main(["show", SOURCE, "--inputs"]) == 2
    assert "lists no inputs (an earlier build): run it again" in capsys.readouterr().err
