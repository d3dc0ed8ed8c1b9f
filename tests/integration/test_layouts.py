"""Layouts list every file of a staged source; a site's own catalog directory adds sources."""

import json
import shutil

import pytest
import yaml

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import catalog_problems, get_source, load_catalog

NNUNET_ENTRY = {
    "id": "site_ct_nnunet",
    "name": "Synthetic CT phantoms in the nnU-Net raw layout",
    "homepage": None,
    "licence": "CC0-1.0",
    "modality": "CT",
    "body_region": "abdomen",
    "format": "nifti",
    "layout": "nnunet",
    "synthetic": True,
    "window": {"center": 40, "width": 400},
    "labels": {
        1: {"name": "liver", "kind": "organ"},
        2: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"},
        3: {"name": "spleen", "kind": "organ"},
        4: {"name": "kidney", "kind": "organ"},
        5: {"name": "renal cyst", "kind": "lesion", "organ": "kidney", "disease": "renal cyst"},
    },
}


@pytest.fixture
def nnunet_source(samples_dir, settings_env, tmp_path, monkeypatch):
    """The CT phantoms re-laid as an nnU-Net dataset with two channels per case, and its entry in
    a site catalog directory."""
    msd = samples_dir / "synthetic_ct_abdomen"
    root = tmp_path / "Dataset901_Phantoms"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for image in sorted((msd / "imagesTr").glob("phantom_*.nii.gz")):
        case = image.name.removesuffix(".nii.gz")
        for channel in ("0000", "0001"):
            shutil.copy(image, root / "imagesTr" / f"{case}_{channel}.nii.gz")
        shutil.copy(msd / "labelsTr" / image.name, root / "labelsTr" / image.name)
    (root / "imagesTr" / "notes.txt").write_text("stray file\n")
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0}, "file_ending": ".nii.gz"})
    )
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "site_ct_nnunet.yaml").write_text(yaml.safe_dump(dict(NNUNET_ENTRY, location=str(root))))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    return root


def test_nnunet_layout_pairs_every_channel_with_its_case_label(nnunet_source):
    result = run_source("site_ct_nnunet", progress=lambda line: None)
    counts = result["counts"]
    assert counts["inputs"] == 4 * 2 + 1 == counts["used"] + counts["rejected"]
    assert counts["rejected"] == 1 and counts["records"] > 0
    assert "site_ct_nnunet" in load_catalog() and "synthetic_ct_abdomen" in load_catalog()


def test_site_catalog_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(tmp_path / "missing"))
    with pytest.raises(MedtrinityError, match="catalog directory .*missing does not exist"):
        load_catalog()
    (site := tmp_path / "site").mkdir()
    shipped = get_source("synthetic_ct_abdomen", load_settings({})).model_dump()
    (site / "synthetic_ct_abdomen.yaml").write_text(yaml.safe_dump(shipped))
    (site / "site_ct.yaml").write_text(yaml.safe_dump(dict(shipped, id="site_ct")))
    broken = dict(shipped, id="site_broken", labels={2: {"name": "tumour", "kind": "tumor"}})
    (site / "site_broken.yaml").write_text(yaml.safe_dump(broken))
    monkeypatch.setenv("MEDTRINITY_CATALOG_DIRS", str(site))
    problems = catalog_problems()
    assert problems[str(site / "synthetic_ct_abdomen.yaml")].endswith("repeats source id 'synthetic_ct_abdomen'")
    assert "labels.2.kind: Input should be 'organ', 'lesion' or 'finding'" in problems[str(site / "site_broken.yaml")]
    catalog = load_catalog()  # the broken and the repeated entries are left out, the rest stays usable
    assert (
        "site_ct" in catalog
        and "site_broken" not in catalog
        and catalog["synthetic_ct_abdomen"] == get_source("synthetic_ct_abdomen", load_settings({}))
    )
    with pytest.raises(MedtrinityError, match="site_broken.yaml is invalid: labels.2.kind"):
        get_source("site_broken")


def _check(source_id: str, env: dict):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "medtrinity_tasks.cli", "sources", "check", source_id],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_sources_check_says_what_is_missing(samples_dir, settings_env, tmp_path):
    import os

    env = {**os.environ, **settings_env}
    good = _check("synthetic_ct_abdomen", env)  # its four broken volumes are in place: only reading finds them
    assert good.returncode == 0 and good.stdout.endswith("matches the layout\n")
    bad = _check("synthetic_dermoscopy", env)
    assert bad.returncode == 1
    assert "masks/orphan_segmentation.png: mask file without a matching image" in bad.stdout
    assert "images/bad_no_mask.jpg: its annotation masks/bad_no_mask_segmentation.png is missing" in bad.stdout
    unstaged = _check("synthetic_dermoscopy", {**env, "MEDTRINITY_SAMPLES_DIR": str(tmp_path / "none")})
    assert unstaged.returncode == 1 and "does not exist; run `medtrinity samples`" in unstaged.stdout


def test_links_that_loop_break_or_leave_the_source_are_rejected(samples_dir, settings_env, tmp_path, monkeypatch):
    import os

    copy = tmp_path / "samples"
    shutil.copytree(samples_dir / "synthetic_dermoscopy", copy / "synthetic_dermoscopy")
    images = copy / "synthetic_dermoscopy" / "images"
    os.symlink("loop_b.jpg", images / "loop_a.jpg")
    os.symlink("loop_a.jpg", images / "loop_b.jpg")
    os.symlink("/etc/hostname", images / "outside.jpg")
    os.symlink("synthetic_0000.jpg", images / "inside.jpg")  # a link within the source is fine
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(copy))
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    run_source("synthetic_dermoscopy", progress=lambda line: None)
    from medtrinity_tasks.storage.shards import manifest_key
    from medtrinity_tasks.storage.store import LocalStore

    manifest = LocalStore(settings_env["MEDTRINITY_OUTPUT"]).read_json(manifest_key("synthetic_dermoscopy"))
    rejects = {r["input"]: r["reason"] for r in manifest["rejected"]}
    assert rejects["images/loop_a.jpg"] == rejects["images/loop_b.jpg"] == "broken or looping symbolic link"
    assert rejects["images/outside.jpg"] == "symbolic link leads outside the source directory"
    assert rejects["images/inside.jpg"] == "file is missing: inside_segmentation.png"  # read past the link
    counts = manifest["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
