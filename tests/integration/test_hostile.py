"""The hostile corpus (tests/hostile.py) through the command line, as a site would run it: no planted
identifier reaches an output or a log, nothing outside a source's root is read or written, bombs are
rejected with bounded memory, and every input is accounted for."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.hostile import (
    SECRETS,
    corpus_env,
    escaped_records,
    leaked_secrets,
    output_texts,
    outside_files,
    run_cli,
    write_hostile_corpus,
)

PEAK_LIMIT_MB = 1500
"""A hostile run's peak memory: the in-process pipeline itself takes about 800 MB."""
EXPECTED_REJECTS = {
    "hostile_reports": {
        "images/bomb.png": "image too large",
        "images/truncated.png": "not a readable image",
        "images/leads_out.png": "symbolic link leads outside",
        "images/linked/sentinel.png": "symbolic link leads outside",
        "images/chain_a.png": "symbolic link leads outside",
    },
    "hostile_masks": {
        "images/mask_leads_out.png": "its annotation: symbolic link leads outside",
        "images/image_leads_out.png": "symbolic link leads outside",
    },
    "hostile_volumes": {
        "imagesTr/bomb.nii.gz": "volume too large",
        "imagesTr/label_leads_out.nii.gz": "path in dataset.json points outside",
        "imagesTr/image_leads_out.nii.gz": "path in dataset.json points outside",
    },
}
"""Input -> how its reject reason starts, for the inputs whose names are safe to publish."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_hostile_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """Each hostile source run once by `medtrinity run`, in-process, memory measured."""
    out = tmp_path_factory.mktemp("hostile-out")
    env = corpus_env(corpus, out)
    return out, env, {source: run_cli(["run", source, "--out", str(out)], env) for source in corpus.sources}


@pytest.mark.slow
def test_every_hostile_source_runs_to_a_balanced_manifest_with_each_reject_explained(runs):
    out, _, results = runs
    for source, run in results.items():
        assert run.code == 0, f"{source}: {run.stderr[-2000:]}"
        assert "Traceback" not in run.stderr
        manifest = json.loads((out / "sources" / source / "manifest.json").read_text())
        counts = manifest["counts"]
        assert counts["inputs"] == counts["used"] + counts["rejected"]
        assert counts["produced"] == counts["records"] + counts["quarantined"]
        assert counts["records"] > 0  # the good inputs next to the hostile ones still become records
        rejects = {r["input"]: r["reason"] for r in manifest["rejected"]}
        assert all(reason.strip() for reason in rejects.values())
        for name, start in EXPECTED_REJECTS.get(source, {}).items():
            assert rejects.get(name, "").startswith(start), (source, name, rejects.get(name))


@pytest.mark.slow
def test_no_planted_identifier_reaches_an_output_or_a_log(runs):
    out, _, results = runs
    texts = output_texts(out)
    texts.update({f"{source} output": run.stdout + run.stderr for source, run in results.items()})
    assert len(texts) > 20
    assert leaked_secrets(texts) == {}
    records = [
        r
        for path in (out / "sources" / "hostile_reports" / "shards").glob("*.parquet")
        for r in pq.read_table(path, columns=["source_relpath", "reference_text"]).to_pylist()
    ]
    reports = [r["reference_text"] for r in records]
    assert reports and all("[NAME]" in text and "[ID]" in text and "[DATE]" in text for text in reports)
    renamed = [r["source_relpath"] for r in records if r["source_relpath"].startswith("images/file-")]
    assert len(renamed) == 1 and renamed[0].endswith(".png")  # the image named after its patient, pseudonymised
    assert all("right upper lung zone" in text for text in reports)  # the clinical words stay


@pytest.mark.slow
def test_nothing_outside_a_source_root_becomes_a_record(runs, corpus):
    out, _, _ = runs
    assert escaped_records(out) == []
    assert outside_files(corpus) == {
        "sentinel.png",
        "sentinel_segmentation.png",
        "images",
        "images/sentinel.png",
        "vol.nii.gz",
    }


@pytest.mark.slow
def test_bombs_are_rejected_within_bounded_memory(runs):
    _, _, results = runs
    for source, run in results.items():
        assert run.peak_mb < PEAK_LIMIT_MB, f"{source} peaked at {run.peak_mb:.0f} MB"


@pytest.mark.slow
def test_archives_in_bypass_patterns_write_nothing_outside_and_bombs_stop(corpus, tmp_path):
    env = corpus_env(corpus, tmp_path / "out")
    before = outside_files(corpus)
    for name, archive in corpus.archives.items():
        run = run_cli(["sources", "unpack", "hostile_masks", str(archive)], env)
        assert "Traceback" not in run.stderr, run.stderr
        if name.startswith("zeros"):
            assert run.code == 2 and "MEDTRINITY_ARCHIVE_MAX_RATIO" in run.stderr, (name, run.stderr)
            assert run.peak_mb < 300, f"{name} peaked at {run.peak_mb:.0f} MB"
        else:
            assert run.code == 1 and "refused" in run.stdout, (name, run.stdout, run.stderr)
    assert outside_files(corpus) == before
    assert not list(Path("/").glob("evil_*"))
    staged = sum(p.stat().st_size for p in corpus.data_dir.joinpath("masks").rglob("*") if p.is_file())
    assert staged < 300 << 20  # the bombs stopped early


@pytest.mark.slow
def test_a_failure_message_quoting_a_table_header_carries_no_identifier(corpus, tmp_path):
    """A table whose header names a patient, with the catalog's column missing: the one-line error
    says which columns it has, de-identified."""
    table = corpus.data_dir / "reports" / "table.csv"
    original = table.read_text()
    header = f"Image Index,Patient: {SECRETS['name']} DOB {SECRETS['dob']},Report"
    table.write_text(header + "\n" + original.split("\n", 1)[1])
    try:
        run = run_cli(["run", "hostile_reports", "--out", str(tmp_path / "out")], corpus_env(corpus, tmp_path / "o"))
    finally:
        table.write_text(original)
    assert run.code == 2 and "Finding Label" in run.stderr and "Traceback" not in run.stderr
    assert leaked_secrets({"stderr": run.stderr}) == {}
