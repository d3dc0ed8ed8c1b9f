"""Accounting a user can follow, end to end in process: a site's mixed DICOM folder whose gate fails still
leaves a manifest that `medtrinity show` reads, every file of the folder is counted with one input, each
input has its outcome, and the site maps its own paths to the pseudonyms the outputs use."""

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pydicom.data import get_testdata_file

from medtrinity_tasks.cli import main
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.storage.shards import manifest_key, shard_key
from medtrinity_tasks.storage.store import LocalStore

MIXED = "site_mixed_dicom"
PYDICOM_FILES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb.dcm", "US1_J2KR.dcm", "rtstruct.dcm",
    "test-SR.dcm", "MR_truncated.dcm", "waveform_ecg.dcm",
)  # fmt: skip
"""Real files of other kinds beside the sample export: single CT and MR slices, compressed syntaxes, a
secondary capture, an ultrasound, an RTSTRUCT without its series, a report, a truncated file, a waveform."""


def _files(root: Path) -> list[str]:
    return sorted(
        Path(folder, name).relative_to(root).as_posix() for folder, _, names in os.walk(root) for name in names
    )


@pytest.fixture
def mixed(samples_dir, settings_env, tmp_path, monkeypatch) -> Path:
    """The sample DICOM export (CT series with SEG, and its broken and non-image files) and real files of
    other kinds in one folder, as a site's source that needs every record to pass and whose tumour label
    carries a date: the gate quarantines the records that name it, and fails the run."""
    root = tmp_path / "export"
    shutil.copytree(samples_dir / "synthetic_ct_dicom", root / "ct")
    (root / "other").mkdir()
    for name in PYDICOM_FILES:
        shutil.copy(get_testdata_file(name), root / "other" / name)
    entry = get_source("synthetic_ct_dicom", load_settings({})).model_dump()
    entry["labels"][2] = dict(entry["labels"][2], name="liver tumour seen 03/04/2021")
    entry.update(id=MIXED, synthetic=False, location=str(root), min_pass_rate=1.0)
    (catalog := tmp_path / "catalog").mkdir()
    (catalog / f"{MIXED}.yaml").write_text(yaml.safe_dump(entry))
    for key, value in {
        "MEDTRINITY_CATALOG_DIRS": str(catalog),
        "MEDTRINITY_DEID_SALT": "the site's own secret",
        "MEDTRINITY_RUNNER": "inprocess",
    }.items():
        monkeypatch.setenv(key, value)
    return root


def test_a_failed_gate_leaves_a_manifest_that_accounts_for_every_file_of_a_mixed_folder(mixed, capsys):
    assert main(["run", MIXED]) == 2  # the run fails
    failure = capsys.readouterr().err
    assert "is below the threshold 1.00" in failure and f"(medtrinity show {MIXED} --inputs)" in failure

    store = LocalStore(load_settings().output_uri)
    manifest = store.read_json(manifest_key(MIXED))
    assert manifest["published"] is False and manifest["shards"] == []  # no records published
    assert manifest["quality"]["passed"] is False and manifest["quality"]["failure"] in failure
    assert store.exists(shard_key(MIXED, "shard-00000"))  # the records are kept, unpublished
    counts, files = manifest["counts"], manifest["files"]
    assert counts["quarantined"] > 0 and counts["inputs"] == counts["used"] + counts["rejected"]
    assert files == {"files": len(_files(mixed)), "used": files["used"], "rejected": files["rejected"]}
    assert files["used"] + files["rejected"] == len(_files(mixed))

    assert main(["show", MIXED]) == 0
    shown = capsys.readouterr().out
    assert f"files: {len(_files(mixed))} ({files['used']} used, {files['rejected']} rejected)" in shown
    assert "quality gate failed: " in shown
    assert main(["show", MIXED, "--inputs", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == counts["inputs"] and sum(row["files"] for row in rows) == len(_files(mixed))
    assert Counter(row["outcome"] for row in rows)["rejected"] == counts["rejected"]
    assert all(row["reason"] for row in rows if row["outcome"] == "rejected")
    assert sum(row["records"] for row in rows) == counts["records"]
    assert sum(row["quarantined"] for row in rows) == counts["quarantined"]

    assert main(["sources", "pseudonyms", MIXED]) == 0  # the site's own paths, onto the names the rows use
    mapped = dict(line.split(" -> ") for line in capsys.readouterr().out.splitlines())
    assert sorted(mapped) == _files(mixed)
    assert Counter(mapped.values()) == {row["input"]: row["files"] for row in rows if row["files"]}
    assert not any(name in json.dumps(manifest) for name in PYDICOM_FILES)  # file names stay at the site


def test_a_published_run_counts_the_files_of_each_input(samples_dir, settings_env, monkeypatch, capsys):
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    result = run_source("synthetic_ct_dicom", progress=lambda line: None)
    files = _files(samples_dir / "synthetic_ct_dicom")
    assert result["files"]["files"] == len(files)
    assert main(["sources", "check", "synthetic_ct_dicom"]) == 1  # the sample's broken files
    assert f"({len(files)} files)" in capsys.readouterr().out.splitlines()[0]
    assert main(["show", "synthetic_ct_dicom", "--inputs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"files: {len(files)} ({result['files']['used']} used, {result['files']['rejected']} rejected)"
    series = [line for line in lines if line.startswith("series-") and " records, " in line]
    sizes = [int(re.match(r"\S+: (\d+) files?,", line).group(1)) for line in series]
    assert sizes and sum(size > 1 for size in sizes) >= 3  # the sample's series; a lone odd slice is a stack of one
    assert (
        len([line for line in lines if line.startswith(("series-", "file-", "image-"))]) == result["counts"]["inputs"]
    )
