"""Every path a layout lists or a first stage opens stays inside the source directory, whatever the
layout: names in listings (``..``, absolute), files and labels that are links leading out, folders
on the way that lead out, link chains ending outside; a link to a file inside is fine. Catalog
locations stay below MEDTRINITY_DATA_DIR or the samples directory unless an entry allows otherwise,
and the S3 mirror never writes through a link leading out of it.

Each source is built in the test's tmp folder, with an ``outside`` folder beside the data directory
holding valid images, volumes and DICOM files that would become records if anything read them."""

from __future__ import annotations

import csv
import json
import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from PIL import Image

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import InputRejected, MedtrinityError
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.confinement import BROKEN_LINK, LINK_LEADS_OUT, confined
from medtrinity_tasks.sources.layouts import OUTSIDE, check_staged, list_inputs

LEAVES = "path leaves the source directory"
LABEL_OUT = f"its annotation: {LINK_LEADS_OUT}"
SIZE = (32, 32)
SECRET_SIZE = (40, 24)  # the outside image's size: a record of it would show


@dataclass
class Place:
    data: Path
    """MEDTRINITY_DATA_DIR: sources are staged below it."""
    outside: Path
    """Beside it: what no listing or reader may touch."""


@pytest.fixture
def place(tmp_path, monkeypatch) -> Place:
    data, outside, catalog = tmp_path / "data", tmp_path / "outside", tmp_path / "catalog"
    for folder in (data, outside / "dir", catalog):
        folder.mkdir(parents=True)
    for key, value in {
        "MEDTRINITY_DATA_DIR": str(data),
        "MEDTRINITY_SAMPLES_DIR": str(tmp_path / "samples"),
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_CATALOG_DIRS": str(catalog),
        "MEDTRINITY_RUNNER": "inprocess",
        "MEDTRINITY_KNOWLEDGE_TOP_K": "0",
    }.items():
        monkeypatch.setenv(key, value)
    _png(outside / "secret.png", SECRET_SIZE)
    _png(outside / "dir" / "secret.png", SECRET_SIZE)
    _png(outside / "secret_mask.png", SIZE, mask=True)
    _nifti(outside / "secret.nii.gz")
    _nifti(outside / "dir" / "seg.nii.gz", labels=True)
    return Place(data, outside)


def _png(path: Path, size=SIZE, mask: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros(size[::-1], np.uint8) if mask else np.random.default_rng(3).integers(40, 200, size[::-1])
    pixels[8:16, 8:16] = 255
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _nifti(path: Path, labels: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((40, 40, 4), np.uint8) if labels else np.random.default_rng(5).normal(0, 50, (40, 40, 4))
    data[2:5, 2:5, 1:3] = 1 if labels else 300
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _link(path: Path, target: Path | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)


def _entry(place: Place, name: str, **fields) -> SourceEntry:
    entry = {
        "id": name,
        "name": f"confinement test source {name}",
        "homepage": None,
        "licence": "CC0-1.0",
        "modality": "dermoscopy",
        "body_region": "skin",
        "format": "image2d",
        "location": str(place.data / name),
        "synthetic": True,
        "labels": {1: {"name": "nodule", "kind": "finding", "organ": "skin", "source_name": "Nodule"}},
        **fields,
    }
    source = SourceEntry.model_validate(entry)
    catalog = Path(os.environ["MEDTRINITY_CATALOG_DIRS"])
    (catalog / f"{name}.yaml").write_text(yaml.safe_dump(source.model_dump()))
    return source


def _listed(source: SourceEntry) -> tuple[set[str], dict[str, str]]:
    """(inputs that are units of work, reason by rejected input)."""
    inputs = list_inputs(source, load_settings())
    usable = {i["source_relpath"] for i in inputs if not i.get("reject_reason")}
    return usable, {i["source_relpath"]: i["reject_reason"] for i in inputs if i.get("reject_reason")}


def _image_links(place: Place, root: Path, folder: str, ext: str = ".png") -> None:
    """In ``root / folder``: a link leading out, a chain of two links (the first to ``root/hop``)
    ending outside, and a link to a file inside."""
    _link(root / folder / f"link_out{ext}", place.outside / f"secret{ext}")
    _link(root / "hop" / f"hop{ext}", place.outside / f"secret{ext}")
    _link(root / folder / f"chain{ext}", Path(os.path.relpath(root / "hop" / f"hop{ext}", root / folder)))
    _link(root / folder / f"inside{ext}", f"good{ext}")


def _opened_outside(place: Place, monkeypatch) -> list[Path]:
    """Every file PIL opens from now on that lies outside the data directory (links resolved)."""
    opened = []
    real_open = Image.open

    def recording_open(path, *args, **kwargs):
        if isinstance(path, str | Path) and not Path(path).resolve().is_relative_to(place.data.resolve()):
            opened.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording_open)
    return opened


def _process(source: SourceEntry) -> tuple[list[dict], dict[str, str]]:
    """Plan and process the source's shards in this process: (records passed or quarantined, reason
    by rejected input)."""
    from medtrinity_tasks.run.accounting import LISTING
    from medtrinity_tasks.run.plan import plan_shards
    from medtrinity_tasks.run.shard import process_shard
    from medtrinity_tasks.storage.shards import quarantine_key, read_parquet, shard_key, work_key
    from medtrinity_tasks.storage.store import LocalStore

    run_id = datetime.now(UTC).strftime("test__%H%M%S%f")
    shards = plan_shards(source.id, run_id=run_id)
    store = LocalStore(os.environ["MEDTRINITY_OUTPUT"])
    records, rejects = [], {}
    for shard in shards:
        process_shard(shard)
        for key in (shard_key(source.id, shard["shard_id"]), quarantine_key(source.id, shard["shard_id"])):
            records += read_parquet(store.read_bytes(key)).to_pylist() if store.exists(key) else []
    for shard_id in [LISTING, *(s["shard_id"] for s in shards)]:
        rejects |= {r["input"]: r["reason"] for r in store.read_json(work_key(source.id, shard_id))["rejected"]}
    return records, rejects


# ---------------------------------------------------------------------------------------------------
# the one function


@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "a/../b.png", "/etc/hostname", "C:/x.png", "a\\x.png"])
def test_unsafe_names_are_refused_before_any_join(place, name):
    with pytest.raises(InputRejected, match=f"^{LEAVES}: "):
        confined(place.data, name)


def test_reasons_quote_at_most_80_characters_of_a_name(place):
    with pytest.raises(InputRejected) as refused:
        confined(place.data, "../" + "x" * 5000)
    assert len(str(refused.value)) < len(LEAVES) + 90
    with pytest.raises(InputRejected, match=LEAVES):
        confined(place.data, "a\0b")


def test_links_are_resolved_at_every_component(place):
    root = place.data / "root"
    _png(root / "good.png")
    _link(root / "loop_a", "loop_b")
    _link(root / "loop_b", "loop_a")
    _link(root / "broken.png", "nowhere.png")
    _link(root / "dir_out", place.outside / "dir")
    _link(root / "dir_in", ".")
    assert confined(root, "missing.png") == root / "missing.png"  # a reader says it is missing
    assert confined(root, "dir_in/good.png") == root / "dir_in/good.png"
    for name, reason in {
        "loop_a": BROKEN_LINK,
        "broken.png": BROKEN_LINK,
        "dir_out/secret.png": LINK_LEADS_OUT,
        "dir_out/not_there.png": LINK_LEADS_OUT,  # missing, but where it would be lies outside
    }.items():
        with pytest.raises(InputRejected, match=f"^{reason}$"):
            confined(root, name)


# ---------------------------------------------------------------------------------------------------
# every layout


def test_decathlon_dataset_json(place, monkeypatch):
    root = place.data / "msd"
    _nifti(root / "imagesTr" / "good.nii.gz")
    _nifti(root / "labelsTr" / "good.nii.gz", labels=True)
    _image_links(place, root, "imagesTr", ".nii.gz")
    _nifti(root / "imagesTr" / "label_out.nii.gz")
    _link(root / "labelsTr" / "label_out.nii.gz", place.outside / "dir" / "seg.nii.gz")
    _link(root / "imagesTr" / "sub", place.outside / "dir")
    names = {
        "good": "good",
        "link_out": "good",
        "chain": "good",
        "inside": "good",
        "label_out": "label_out",
        "sub/seg": "good",
    }
    training = [
        {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{label}.nii.gz"} for n, label in names.items()
    ]
    outside = place.outside / "secret.nii.gz"
    training += [{"image": "../../outside/secret.nii.gz", "label": "./labelsTr/good.nii.gz"}]
    training += [{"image": str(outside), "label": "./labelsTr/good.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    source = _entry(place, "msd", format="nifti", layout="msd", modality="CT", body_region="abdomen")

    usable, rejects = _listed(source)
    assert usable == {"imagesTr/good.nii.gz", "imagesTr/inside.nii.gz"}
    escaped = ["link_out", "chain", "label_out", "sub/seg"]
    expected = {f"imagesTr/{n}.nii.gz" for n in escaped} | {"../../outside/secret.nii.gz", str(outside)}
    assert {path: OUTSIDE for path in expected} == {p: r for p, r in rejects.items() if p in expected}

    # the listing file itself, as a link leading out, is refused before it is read
    (root / "dataset.json").rename(place.outside / "dataset.json")
    _link(root / "dataset.json", place.outside / "dataset.json")
    with pytest.raises(MedtrinityError, match=f"source msd: cannot read dataset.json: {LINK_LEADS_OUT}"):
        list_inputs(source, load_settings())


def test_the_volume_slicer_opens_files_only_inside(place):
    """A link swapped in after the listing is refused when the file is opened."""
    from medtrinity_tasks.run.pipeline import input_stage

    root = place.data / "msd_swap"
    _nifti(root / "imagesTr" / "good.nii.gz")
    _nifti(root / "labelsTr" / "good.nii.gz", labels=True)
    pair = {"image": "imagesTr/good.nii.gz", "label": "labelsTr/good.nii.gz"}
    (root / "dataset.json").write_text(json.dumps({"training": [pair]}))
    source = _entry(place, "msd_swap", format="nifti", layout="msd", modality="CT", body_region="abdomen")
    (row,) = list_inputs(source, load_settings())
    slicer = input_stage(source, load_settings(), expert_follows=False)
    assert slicer([dict(row)])[0].get("id")  # read while the files are in place
    (root / "labelsTr" / "good.nii.gz").unlink()
    _link(root / "labelsTr" / "good.nii.gz", place.outside / "dir" / "seg.nii.gz")
    assert [r["reject_reason"] for r in slicer([dict(row)])] == [LINK_LEADS_OUT]


def test_nnunet(place):
    root = place.data / "nnunet"
    (root / "dataset.json").parent.mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    _nifti(root / "imagesTr" / "good_0000.nii.gz")
    _nifti(root / "labelsTr" / "good.nii.gz", labels=True)
    _link(root / "imagesTr" / "out_0000.nii.gz", place.outside / "secret.nii.gz")
    _link(root / "hop" / "hop.nii.gz", place.outside / "secret.nii.gz")
    _link(root / "imagesTr" / "chain_0000.nii.gz", "../hop/hop.nii.gz")
    _nifti(root / "imagesTr" / "labelout_0000.nii.gz")
    _link(root / "labelsTr" / "labelout.nii.gz", place.outside / "dir" / "seg.nii.gz")
    _link(root / "imagesTr" / "inside_0000.nii.gz", "good_0000.nii.gz")
    _link(root / "labelsTr" / "inside.nii.gz", "good.nii.gz")
    source = _entry(place, "nnunet", format="nifti", layout="nnunet", modality="CT", body_region="abdomen")

    usable, rejects = _listed(source)
    assert usable == {"imagesTr/good_0000.nii.gz", "imagesTr/inside_0000.nii.gz"}
    assert rejects == {
        "imagesTr/out_0000.nii.gz": LINK_LEADS_OUT,
        "imagesTr/chain_0000.nii.gz": LINK_LEADS_OUT,
        "imagesTr/labelout_0000.nii.gz": LABEL_OUT,
    }
    # a folder on the way that leads out: every label lies behind it
    (root / "labelsTr").rename(root / "labels_kept")
    _link(root / "labelsTr", place.outside / "dir")
    usable, rejects = _listed(source)
    assert not usable and set(rejects.values()) == {LINK_LEADS_OUT, LABEL_OUT}


def test_paired_files(place):
    root = place.data / "paired"
    for case in ("good", "label_out", "middle"):
        _nifti(root / "cases" / case / "img.nii.gz")
    _nifti(root / "labels" / "good" / "seg.nii.gz", labels=True)
    for case in ("link_out", "chain"):
        _nifti(root / "labels" / case / "seg.nii.gz", labels=True)
    _link(root / "cases" / "link_out" / "img.nii.gz", place.outside / "secret.nii.gz")
    _link(root / "hop" / "hop.nii.gz", place.outside / "secret.nii.gz")
    _link(root / "cases" / "chain" / "img.nii.gz", "../../hop/hop.nii.gz")
    _link(root / "labels" / "label_out" / "seg.nii.gz", place.outside / "dir" / "seg.nii.gz")
    _link(root / "labels" / "middle", place.outside / "dir")  # os.walk lists nothing behind it
    _link(root / "cases" / "inside" / "img.nii.gz", "../good/img.nii.gz")
    _link(root / "labels" / "inside" / "seg.nii.gz", "../good/seg.nii.gz")
    layout = {"image_pattern": r"cases/(?P<case>[^/]+)/img\.nii\.gz", "label_path": "labels/{case}/seg.nii.gz"}
    fields = {"format": "nifti", "layout": "paired_files", "modality": "CT", "body_region": "abdomen"}
    source = _entry(place, "paired", paired_files=layout, **fields)

    usable, rejects = _listed(source)
    assert usable == {"cases/good/img.nii.gz", "cases/inside/img.nii.gz"}
    assert rejects == {
        "cases/link_out/img.nii.gz": LINK_LEADS_OUT,
        "cases/chain/img.nii.gz": LINK_LEADS_OUT,
        "cases/label_out/img.nii.gz": LABEL_OUT,
        "cases/middle/img.nii.gz": LABEL_OUT,
        "hop/hop.nii.gz": "neither an image of the layout nor the label of one",
    }
    climbing = dict(layout, label_path="../../outside/{case}.nii.gz")
    _, rejects = _listed(_entry(place, "paired", paired_files=climbing, **fields))
    assert rejects["cases/good/img.nii.gz"] == f"its annotation: {LEAVES}: '../../outside/good.nii.gz'"


def test_dicom_series_read_no_header_outside(place, monkeypatch):

    from medtrinity_tasks.phi import pseudonym
    from medtrinity_tasks.run.pipeline import input_stage
    from medtrinity_tasks.sources import dicom_listing
    from medtrinity_tasks.sources.deid import salt_for
    from tests.support import dicom_fixtures as fx

    root = place.data / "dicom"
    datasets = fx.ct_datasets("axial")
    fx.save(datasets, root / "series", shuffle=False)
    (root / "ann").mkdir()
    fx.seg(datasets, "axial", fx.box_mask(fx.CUBE)).save_as(root / "ann" / "seg.dcm")
    fx.seg(datasets, "axial", fx.box_mask(fx.BLOCK)).save_as(place.outside / "seg.dcm")  # on the same series
    other = fx.save(fx.ct_datasets("axial"), place.outside / "other", shuffle=False)  # another series
    _link(root / "link_out.dcm", other[0])
    _link(root / "hop" / "hop.dcm", other[1])
    _link(root / "chain.dcm", "hop/hop.dcm")
    _link(root / "linked_dir", place.outside / "other")  # os.walk does not go in
    _link(root / "ann" / "seg_out.dcm", place.outside / "seg.dcm")
    _link(root / "ann" / "seg_alias.dcm", "seg.dcm")
    scanned = []
    real_scan = dicom_listing.scan
    monkeypatch.setattr(
        dicom_listing, "scan", lambda paths, *limits: scanned.extend(paths) or real_scan(paths, *limits)
    )
    labels = {1: {"name": "cube", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}}
    source = _entry(
        place, "dicom", format="dicom", layout="series", modality="CT", body_region="abdomen", labels=labels
    )

    inputs = list_inputs(source, load_settings())
    assert scanned and all(p.resolve().is_relative_to(root.resolve()) for p in scanned)
    (series,) = [i for i in inputs if not i.get("reject_reason")]  # the outside series never shows
    assert len(series["member_files"]) == fx.SHAPE[2] and all(p.startswith("series/") for p in series["member_files"])
    assert series["annotation_files"] == ["ann/seg.dcm"]  # its alias inside is the same instance again
    rejects = {i["source_relpath"]: i["reject_reason"] for i in inputs if i.get("reject_reason")}
    escaped = ["link_out.dcm", "chain.dcm", "hop/hop.dcm", "ann/seg_out.dcm"]
    salt = salt_for(source, load_settings())
    alias = pseudonym(salt, "ann/seg_alias.dcm", "file")
    assert rejects.pop(alias).startswith("duplicate instance: ")
    assert rejects == {pseudonym(salt, p, "file"): LINK_LEADS_OUT for p in escaped}

    # a member file swapped for a link leading out after the listing: refused when opened
    slicer = input_stage(source, load_settings(), expert_follows=False)
    swapped = root / series["member_files"][3]
    swapped.unlink()
    _link(swapped, other[3])
    assert [r["reject_reason"] for r in slicer([dict(series)])] == [LINK_LEADS_OUT]


def _image_mask_source(place: Place) -> SourceEntry:
    root = place.data / "masks"
    for name in ("good", "link_out", "chain"):  # the images that link out have masks that would pair
        _png(root / "masks" / f"{name}_mask.png", mask=True)
    _png(root / "images" / "good.png")
    _png(root / "images" / "label_out.png")
    _image_links(place, root, "images")
    _link(root / "masks" / "label_out_mask.png", place.outside / "secret_mask.png")
    _link(root / "masks" / "inside_mask.png", "good_mask.png")
    layout = {"images_dir": "images", "masks_dir": "masks", "mask_suffix": "_mask.png"}
    return _entry(place, "masks", layout="image_mask", image_mask=layout)


IMAGE_MASK_REJECTS = {
    "images/link_out.png": LINK_LEADS_OUT,
    "images/chain.png": LINK_LEADS_OUT,
    "images/label_out.png": LABEL_OUT,
}


def test_image_mask_listing_check_and_run(place, monkeypatch):
    source = _image_mask_source(place)
    usable, rejects = _listed(source)
    assert usable == {"images/good.png", "images/inside.png"} and rejects == IMAGE_MASK_REJECTS
    _, problems = check_staged(source, load_settings())
    assert sorted(problems) == sorted(f"{path}: {reason}" for path, reason in IMAGE_MASK_REJECTS.items())

    opened = _opened_outside(place, monkeypatch)
    records, rejects = _process(source)
    assert sorted(r["source_relpath"] for r in records) == ["images/good.png", "images/inside.png"]
    assert all((r["width"], r["height"]) == SIZE for r in records) and rejects == IMAGE_MASK_REJECTS
    assert opened == []


def test_the_planar_loader_opens_files_only_inside(place):
    from medtrinity_tasks.run.pipeline import input_stage

    source = _image_mask_source(place)
    row = next(i for i in list_inputs(source, load_settings()) if i["source_relpath"] == "images/good.png")
    loader = input_stage(source, load_settings(), expert_follows=False)
    assert loader([dict(row)])[0].get("id")
    mask = place.data / "masks" / "masks" / "good_mask.png"
    mask.unlink()
    _link(mask, place.outside / "secret_mask.png")
    assert [r["reject_reason"] for r in loader([dict(row)])] == [LINK_LEADS_OUT]


def _named_in_a_listing(place: Place, root: Path) -> list[str]:
    """The images of a table or COCO source: good and linked files, plus names that climb out, an
    absolute name, and a name through a folder link leading out."""
    _png(root / "images" / "good.png")
    _image_links(place, root, "images")
    _link(root / "images" / "sub", place.outside / "dir")
    linked = ["good.png", "link_out.png", "chain.png", "inside.png", "sub/secret.png"]
    return [*linked, "../../../outside/secret.png", str(place.outside / "secret.png")]


def _listing_rejects(place: Place) -> dict[str, str]:
    absolute = str(place.outside / "secret.png")
    return {
        "images/link_out.png": LINK_LEADS_OUT,
        "images/chain.png": LINK_LEADS_OUT,
        "images/sub/secret.png": LINK_LEADS_OUT,
        "../../outside/secret.png": f"{LEAVES}: '../../../outside/secret.png'",
        posixpath.normpath(f"images/{absolute}"): f"{LEAVES}: {absolute!r}",
    }


def test_image_table(place):
    root = place.data / "table"
    names = _named_in_a_listing(place, root)
    with (root / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "finding"])
        writer.writerows([name, "Nodule"] for name in names)
    table = {
        "images_dir": "images",
        "files": [{"path": "table.csv", "image_column": "image", "label_column": "finding"}],
    }
    source = _entry(place, "table", layout="image_table", table=table)

    usable, rejects = _listed(source)
    assert usable == {"images/good.png", "images/inside.png"} and rejects == _listing_rejects(place)

    long_label = "Mass " * 2000
    with (root / "table.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(["good.png", long_label])
    _, rejects = _listed(source)
    assert rejects["images/good.png"].startswith("label 'Mass Mass") and len(rejects["images/good.png"]) < 130

    (root / "table.csv").rename(place.outside / "table.csv")
    _link(root / "table.csv", place.outside / "table.csv")
    with pytest.raises(MedtrinityError, match=f"source table: cannot read table.csv: {LINK_LEADS_OUT}"):
        list_inputs(source, load_settings())


@pytest.mark.parametrize(
    "content",
    [
        b"image,finding\ngood.png," + b"x" * (csv.field_size_limit() + 1) + b"\n",
        b"image,finding\ngood.png,N\xe9dule\xff\xfe\n",
    ],
    ids=["field beyond csv's limit", "not UTF-8"],
)
def test_a_table_csv_cannot_read_is_a_clear_error_naming_it(place, content):
    root = place.data / "bad_table"
    _png(root / "images" / "good.png")
    (root / "findings.csv").write_bytes(content)
    table = {"files": [{"path": "findings.csv", "image_column": "image", "label_column": "finding"}]}
    source = _entry(place, "bad_table", layout="image_table", table=table)
    with pytest.raises(
        MedtrinityError, match=r"^source bad_table: table findings.csv is not a readable CSV \(line"
    ) as e:
        list_inputs(source, load_settings())
    assert len(str(e.value)) < 300


def test_coco_listing_and_run(place, monkeypatch):
    root = place.data / "coco"
    names = _named_in_a_listing(place, root)
    images = [{"id": n, "file_name": name, "width": 32, "height": 32} for n, name in enumerate(names)]
    boxes = [{"id": n, "image_id": n, "category_id": 1, "bbox": [8, 8, 8, 8]} for n in range(len(names))]
    coco = {"images": images, "annotations": boxes, "categories": [{"id": 1, "name": "Nodule"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    source = _entry(place, "coco", layout="coco")
    expected = dict(_listing_rejects(place))
    expected["images/../../../outside/secret.png"] = expected.pop("../../outside/secret.png")  # COCO keeps the name
    expected[f"images/{names[-1]}"] = expected.pop(posixpath.normpath(f"images/{names[-1]}"))

    usable, rejects = _listed(source)
    assert usable == {"images/good.png", "images/inside.png"} and rejects == expected
    opened = _opened_outside(place, monkeypatch)
    records, rejects = _process(source)
    assert sorted(r["source_relpath"] for r in records) == ["images/good.png", "images/inside.png"]
    assert all((r["width"], r["height"]) == SIZE for r in records) and rejects == expected
    assert opened == []

    (root / "annotations.json").rename(place.outside / "annotations.json")
    _link(root / "annotations.json", place.outside / "annotations.json")
    with pytest.raises(MedtrinityError, match=f"cannot read annotations.json: {LINK_LEADS_OUT}"):
        list_inputs(source, load_settings())


def test_class_folders(place):
    root = place.data / "classes"
    _png(root / "images" / "NORM" / "good.png")
    _image_links(place, root, "images/NORM")
    _link(root / "images" / "TUM", place.outside / "dir")  # a class folder leading out
    labels = {
        1: {"name": "normal mucosa", "kind": "finding", "organ": "colon", "source_name": "NORM"},
        2: {"name": "tumour", "kind": "finding", "organ": "colon", "source_name": "TUM"},
    }
    source = _entry(place, "classes", layout="class_folders", labels=labels)
    usable, rejects = _listed(source)
    assert usable == {"images/NORM/good.png", "images/NORM/inside.png"}
    escaped = ["images/NORM/link_out.png", "images/NORM/chain.png", "images/TUM/secret.png", "images/TUM/seg.nii.gz"]
    assert rejects == {path: LINK_LEADS_OUT for path in escaped}


# ---------------------------------------------------------------------------------------------------
# catalog locations and the S3 mirror


def test_catalog_locations_stay_below_the_data_or_samples_directory(place, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _png(elsewhere / "images" / "good.png")
    outside = _entry(place, "outside", location=str(elsewhere), layout="class_folders")
    with pytest.raises(MedtrinityError) as refused:
        outside.location_path(load_settings())
    message = str(refused.value)
    assert message.startswith(f"source outside: location {str(elsewhere)!r} lies outside MEDTRINITY_DATA_DIR")
    assert "allow_outside_data_dir: true" in message
    with pytest.raises(MedtrinityError, match="lies outside MEDTRINITY_DATA_DIR"):
        list_inputs(outside, load_settings())
    assert check_staged(outside, load_settings()) == ([], [message])

    allowed = outside.model_copy(update={"allow_outside_data_dir": True})
    assert allowed.location_path(load_settings()) == elsewhere
    assert list_inputs(allowed, load_settings())[0]["reject_reason"] == "not inside a class folder"
    samples = outside.model_copy(update={"location": "${MEDTRINITY_SAMPLES_DIR}/x"})
    assert samples.location_path(load_settings()) == tmp_path / "samples" / "x"

    for location, reason in {"/": "is the file system's root", "/tmp/..": "is the file system's root",
                             "data/x": "is relative"}.items():  # fmt: skip
        with pytest.raises(MedtrinityError, match=reason):
            allowed.model_copy(update={"location": location}).location_path(load_settings())

    _link(place.data / "linked", elsewhere)  # below the data directory by name only
    linked = outside.model_copy(update={"location": str(place.data / "linked")})
    with pytest.raises(MedtrinityError, match=f"resolving to {elsewhere}"):
        linked.location_path(load_settings())


def test_the_mirror_writes_nothing_through_links_leading_out(place, tmp_path, monkeypatch):
    from medtrinity_tasks.sources import mirror as mirror_module

    class Bucket:
        objects_written = {"images/a.png": b"a", "linked/evil.png": b"evil", "../escape.png": b"up"}

        def objects(self):
            return [(key, len(body), datetime.now(UTC)) for key, body in self.objects_written.items()]

        def download(self, key, path):
            Path(path).write_bytes(self.objects_written[key])

    monkeypatch.setattr(mirror_module, "open_store", lambda uri, settings: Bucket())
    destination = tmp_path / "cache" / "sources" / "s3_source"
    _link(destination / "linked", place.outside / "dir")
    done = mirror_module.mirror("s3://bucket/prefix", destination, load_settings())
    assert (done["fetched"], done["refused"]) == (1, 2)
    assert (destination / "images" / "a.png").read_bytes() == b"a"
    assert sorted(p.name for p in (place.outside / "dir").iterdir()) == ["secret.png", "seg.nii.gz"]
    assert not (tmp_path / "cache" / "sources" / "escape.png").exists()
