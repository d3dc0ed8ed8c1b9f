"""`medtrinity sources check` and `sources pseudonyms` on a staged DICOM export and a 2D source: every
series checked by its own files, and every file of the site's folder mapped to the name it is published under."""

import os
import shutil
from pathlib import Path

import pytest
import yaml

from medtrinity_tasks.cli import main
from medtrinity_tasks.config import load_settings
from medtrinity_tasks.phi import pseudonym
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.deid import SYNTHETIC_SALT
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.sources.samples import write_ct_dicom, write_dermoscopy
from medtrinity_tasks.sources.samples.dicom import FAKE_PHI


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """Two DICOM CT series with SEG and every broken file the sample source has, and eight dermoscopy images."""
    root = tmp_path_factory.mktemp("samples")
    write_ct_dicom(root, cases=2, bad_inputs=True)
    write_dermoscopy(root, cases=8, bad_inputs=True)
    return root


@pytest.fixture
def samples(staged, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(staged))
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MEDTRINITY_DEID_SALT", raising=False)
    return staged


def _files(root: Path) -> list[str]:
    return sorted(
        Path(folder, name).relative_to(root).as_posix() for folder, _, names in os.walk(root) for name in names
    )


def test_check_counts_every_file_and_reports_no_valid_series_as_missing(samples, capsys):
    root = samples / "synthetic_ct_dicom"
    inputs = list_inputs(get_source("synthetic_ct_dicom"), load_settings())
    assert main(["sources", "check", "synthetic_ct_dicom"]) == 1  # the broken files are problems
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"synthetic_ct_dicom: {len(inputs)} inputs ({len(_files(root))} files) at {root}")
    problems = [line.removeprefix("  problem: ") for line in out if line.startswith("  problem: ")]
    rejected = {item["source_relpath"] for item in inputs if item.get("reject_reason")}
    assert {line.split(":")[0] for line in problems} == rejected  # the rejects, and nothing else
    assert not any("missing" in line for line in problems)
    series = [item for item in inputs if item["source_relpath"].startswith("series-") and "reject_reason" not in item]
    assert len(series) >= 2 and all(item["member_files"] for item in series)


def test_check_of_a_clean_export_matches_the_layout(samples, tmp_path, monkeypatch, capsys):
    clean = tmp_path / "clean"
    write_ct_dicom(clean, cases=2)
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(clean))
    assert main(["sources", "check", "synthetic_ct_dicom"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("matches the layout\n") and f"({len(_files(clean / 'synthetic_ct_dicom'))} files)" in out


def test_pseudonyms_map_each_file_to_its_series_or_its_own_reject(samples, capsys):
    root = samples / "synthetic_ct_dicom"
    inputs = {item["source_relpath"]: item for item in list_inputs(get_source("synthetic_ct_dicom"), load_settings())}
    assert main(["sources", "pseudonyms", "synthetic_ct_dicom"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mapped = dict(line.split(" -> ") for line in lines)
    assert sorted(mapped) == _files(root)  # every file, once
    assert set(mapped.values()) == set(inputs)  # onto the inputs a run accounts for, every one of them
    for relpath, name in mapped.items():
        item = inputs[name]
        if name.startswith("file-"):  # a file that is an input of its own: named as the listing names it
            assert name == pseudonym(SYNTHETIC_SALT, relpath, "file") and item["reject_reason"]
        else:
            assert relpath in item["member_files"] + item["annotation_files"]
    assert any(FAKE_PHI["PatientID"] in relpath for relpath in mapped)  # the site's own paths, on stdout


def test_pseudonyms_of_given_paths_and_paths_outside(samples, tmp_path, capsys, monkeypatch):
    root = samples / "synthetic_ct_dicom"
    folder = next(p for p in sorted(root.rglob("*")) if p.is_dir() and any(p.glob("*.dcm")))
    monkeypatch.chdir(root)
    assert main(["sources", "pseudonyms", "synthetic_ct_dicom", str(folder.relative_to(root))]) == 0
    mapped = dict(line.split(" -> ") for line in capsys.readouterr().out.splitlines())
    assert sorted(mapped) == [f"{folder.relative_to(root).as_posix()}/{p}" for p in _files(folder)]
    assert main(["sources", "pseudonyms", "synthetic_ct_dicom", str(tmp_path), str(root / "nothing.dcm")]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{tmp_path} -> not under the source directory {root}",
        f"{root / 'nothing.dcm'} -> no such file",
    ]


def test_pseudonyms_of_a_2d_source_name_images_and_their_masks(samples, capsys):
    assert main(["sources", "pseudonyms", "synthetic_dermoscopy"]) == 0
    mapped = dict(line.split(" -> ") for line in capsys.readouterr().out.splitlines())
    assert mapped["images/synthetic_0000.jpg"] == "images/synthetic_0000.jpg"
    assert mapped["masks/synthetic_0000_segmentation.png"] == "label of images/synthetic_0000.jpg"
    assert mapped["masks/orphan_segmentation.png"] == "masks/orphan_segmentation.png"  # a reject of its own


def test_pseudonyms_of_a_real_source_need_the_salt(samples, tmp_path, monkeypatch, capsys):
    shipped = get_source("synthetic_ct_dicom", load_settings({})).model_dump(mode="json")
    shutil.copytree(samples / "synthetic_ct_dicom", tmp_path / "site_export")
    entry = dict(shipped, id="site_ct_dicom", synthetic=False, location=str(tmp_path / "site_export"))
    (catalog := tmp_path / "catalog").mkdir()
    (catalog / "site_ct_dicom.yaml").write_text(yaml.safe_dump(entry))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))
    assert main(["sources", "pseudonyms", "site_ct_dicom"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "needs MEDTRINITY_DEID_SALT" in captured.err
    builtin = {item["source_relpath"] for item in list_inputs(get_source("synthetic_ct_dicom"), load_settings())}
    monkeypatch.setenv("MEDTRINITY_DEID_SALT", "the site's own secret")
    assert main(["sources", "pseudonyms", "site_ct_dicom"]) == 0
    mapped = dict(line.split(" -> ") for line in capsys.readouterr().out.splitlines())
    names = {item["source_relpath"] for item in list_inputs(get_source("site_ct_dicom"), load_settings())}
    assert set(mapped.values()) == names and not names & builtin  # the site's salt makes other pseudonyms


def test_check_names_the_missing_files_of_a_series_by_pseudonym(samples, tmp_path, monkeypatch, capsys):
    """A file that goes after the listing read it (a copy still under way, a clean-up): the series is
    checked by its own files, and the missing one is named as the listing would name it."""
    from medtrinity_tasks.sources import layouts

    copy = tmp_path / "copy"
    shutil.copytree(samples / "synthetic_ct_dicom", copy / "synthetic_ct_dicom")
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(copy))
    listed = list_inputs(get_source("synthetic_ct_dicom"), load_settings())
    series = max((item for item in listed if item.get("member_files")), key=lambda item: len(item["member_files"]))
    gone = series["member_files"][len(series["member_files"]) // 2]
    (copy / "synthetic_ct_dicom" / gone).unlink()
    monkeypatch.setattr(layouts, "list_inputs", lambda source, settings: listed)  # the listing from before
    assert main(["sources", "check", "synthetic_ct_dicom"]) == 1
    expected = f"{series['source_relpath']}: 1 of its files are missing: {pseudonym(SYNTHETIC_SALT, gone, 'file')}"
    assert f"  problem: {expected}" in capsys.readouterr().out.splitlines()
