"""Layouts: how a staged source lists its inputs. One function per layout, chosen by the catalog.

Every file a layout is responsible for becomes an input row: either a unit of work
(``source_relpath`` and, where there is one, ``label_relpath``) or a reject with its reason, so a
run accounts for every file it was given.
"""

from __future__ import annotations

import json
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError, SourceNotFound
from medtrinity_tasks.sources.catalog import SourceEntry

OUTSIDE = "path in dataset.json points outside the source directory"


def list_inputs(source: SourceEntry, settings: Settings) -> list[dict]:
    root = source.location_path(settings)
    if not root.is_dir():
        hint = "run `medtrinity samples`" if source.synthetic else "stage the source's files there"
        raise SourceNotFound(f"source {source.id}: directory {root} does not exist; {hint}")
    inputs = LISTERS[source.layout](source, root)
    return [inputs[key] for key in sorted(inputs)]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _msd(source: SourceEntry, root: Path) -> dict[str, dict]:
    """Medical Segmentation Decathlon: ``dataset.json`` lists image/label pairs; image files in
    ``imagesTr`` that it does not list are rejected, so every file there is accounted for."""
    listing = root / "dataset.json"
    if not listing.is_file():
        raise SourceNotFound(
            f"source {source.id}: {listing} is missing (expected the Medical Segmentation Decathlon layout)"
        )
    inputs = {}
    try:
        for entry in json.loads(listing.read_text())["training"]:
            image = Path(entry["image"]).as_posix()  # Path drops the "./" Decathlon writes
            label = Path(entry["label"]).as_posix() if entry.get("label") else None
            inputs[image] = {"source_relpath": image, "label_relpath": label}
    except (ValueError, KeyError, TypeError) as exc:
        raise MedtrinityError(f"source {source.id}: {listing} is not a Decathlon dataset.json ({exc!r})") from None
    for item in inputs.values():
        paths = [Path(p) for p in (item["source_relpath"], item["label_relpath"]) if p]
        if any(p.is_absolute() or ".." in p.parts for p in paths):
            item["reject_reason"] = OUTSIDE
    for path in _files(root / "imagesTr"):
        relpath = f"imagesTr/{path.name}"
        inputs.setdefault(relpath, {"source_relpath": relpath, "reject_reason": "not listed in dataset.json"})
    return inputs


def _nnunet(source: SourceEntry, root: Path) -> dict[str, dict]:
    """nnU-Net v2 raw layout: ``imagesTr/<case>_<channel:04d><file_ending>`` with
    ``labelsTr/<case><file_ending>``. Every channel file is an input (each is an image in its own
    right, e.g. BraTS's FLAIR, T1, T1ce, T2), paired with its case's label map."""
    listing = root / "dataset.json"
    if not listing.is_file():
        raise SourceNotFound(f"source {source.id}: {listing} is missing (expected the nnU-Net raw layout)")
    try:
        ending = json.loads(listing.read_text())["file_ending"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MedtrinityError(f"source {source.id}: {listing} is not an nnU-Net dataset.json ({exc!r})") from None
    inputs = {}
    for path in _files(root / "imagesTr"):
        relpath = f"imagesTr/{path.name}"
        stem = path.name.removesuffix(ending)
        case, _, channel = stem.rpartition("_")
        if not path.name.endswith(ending) or not case or not (len(channel) == 4 and channel.isdigit()):
            inputs[relpath] = {"source_relpath": relpath, "reject_reason": f"not named <case>_<channel 0000>{ending}"}
        else:
            inputs[relpath] = {"source_relpath": relpath, "label_relpath": f"labelsTr/{case}{ending}"}
    return inputs


def _image_mask(source: SourceEntry, root: Path) -> dict[str, dict]:
    """2D images, each with its mask; a mask no image claims is rejected rather than ignored."""
    layout = source.image_mask
    images_dir = root / layout.images_dir
    if not images_dir.is_dir():
        raise SourceNotFound(f"source {source.id}: {images_dir} is missing (expected images in {layout.images_dir}/)")
    inputs, claimed = {}, set()
    for path in _files(images_dir):
        relpath = f"{layout.images_dir}/{path.name}"
        mask = f"{layout.masks_dir}/{path.name.rsplit('.', 1)[0]}{layout.mask_suffix}"
        inputs[relpath] = {"source_relpath": relpath, "label_relpath": mask}
        claimed.add(mask)
    for path in _files(root / layout.masks_dir):
        relpath = f"{layout.masks_dir}/{path.name}"
        if relpath not in claimed:
            inputs[relpath] = {"source_relpath": relpath, "reject_reason": "mask file without a matching image"}
    return inputs


LISTERS = {"msd": _msd, "nnunet": _nnunet, "image_mask": _image_mask}


def check_staged(source: SourceEntry, settings: Settings) -> tuple[list[dict], list[str]]:
    """The inputs a run would find, and what is wrong with the staged copy before any pixel is read:
    a missing directory or listing, files the layout cannot place, images or labels missing."""
    try:
        inputs = list_inputs(source, settings)
    except MedtrinityError as exc:
        return [], [str(exc)]
    root = source.location_path(settings)
    problems = []
    for item in inputs:
        if item.get("reject_reason"):
            problems.append(f"{item['source_relpath']}: {item['reject_reason']}")
            continue
        if not (root / item["source_relpath"]).is_file():
            problems.append(f"{item['source_relpath']}: listed but missing")
        label = item.get("label_relpath")
        if label and not (root / label).is_file():
            problems.append(f"{item['source_relpath']}: its annotation {label} is missing")
    return inputs, problems
