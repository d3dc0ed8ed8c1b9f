"""Layouts: how a staged source lists its inputs. One function per layout, chosen by the catalog.

Every file a layout is responsible for becomes an input row: either a unit of work
(``source_relpath`` and, where there is one, ``label_relpath``) or a reject with its reason, so a
run accounts for every file it was given. Every path a layout lists, pairs or reads goes through
``confinement.confined``, so a name climbing out of the source directory or a link leading out of
it becomes a reject (or, for a listing file, an error) instead of a read.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
import re
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import InputRejected, MedtrinityError, SourceNotFound
from medtrinity_tasks.phi import clean_reason, deidentify, name_aliases, phi_in_path, pseudonym, published_path, quote
from medtrinity_tasks.reasons import Reason, reject_of, rejected
from medtrinity_tasks.sources.catalog import SourceEntry, TableFile
from medtrinity_tasks.sources.confinement import confined
from medtrinity_tasks.sources.deid import salt_for
from medtrinity_tasks.sources.dicom_listing import list_dicom_series
from medtrinity_tasks.sources.table_annotations import table_annotations

OUTSIDE = "path in dataset.json points outside the source directory"
NOT_IN_LAYOUT = "neither an image of the layout nor the label of one"
NAME_HOLDS_PHI = "file name holds personal data"
JSON_ERRORS = (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError)
"""What reading a listing file of the wrong shape raises (RecursionError: arrays nested 100,000 deep)."""
LISTING_COLUMNS = (
    "source_relpath", "file_relpath", "label_relpath", "sequence", "image_labels", "annotation_boxes",
    "reference_text", "member_files", "annotation_files", "modality", "body_region",
)  # fmt: skip
"""The ``ROW_SCHEMA`` columns an input of ``list_inputs`` may carry, whatever its layout: what the first stage
reads (a DICOM series names its own modality and body region). Besides them a reject carries its reason, and a
DICOM input its ``scope``, which only the plan reads."""


def list_inputs(source: SourceEntry, settings: Settings, scope: list[str] | None = None) -> list[dict]:
    """Every input of the staged source. ``scope`` (the ``scope`` pseudonyms of some inputs, from
    an earlier listing) narrows a DICOM listing to those folders and 2D objects: a shard reads the headers of its
    own series, not of the whole source."""
    uri = source.location_uri(settings)
    if uri.startswith("s3://"):
        from medtrinity_tasks.sources.mirror import mirror

        mirror(uri, source.location_path(settings), settings)
    failed = []
    if source.layout == "dicomweb" and scope is None:  # the plan's listing brings the mirror in step; shards read it
        from medtrinity_tasks.sources.dicomweb import mirror_dicomweb

        _, failed = mirror_dicomweb(source, source.location_path(settings), settings)
    root = source.location_path(settings)
    if not root.is_dir():
        hint = "run `medtrinity samples`" if source.synthetic else "stage the source's files there"
        raise SourceNotFound(f"source {source.id}: directory {root} does not exist; {hint}")
    lister = LISTERS[source.layout]
    inputs = lister(source, root, scope) if lister is list_dicom_series else lister(source, root)
    for key in failed:  # what the mirror holds of a series it could not retrieve is not read
        inputs[key] = rejected(
            {"source_relpath": key}, Reason.of("series could not be retrieved from the DICOMweb server")
        )
    for key, item in inputs.items():
        reason = None if item.get("reject_reason") else _escape_reason(root, item)
        inputs[key] = _deidentify(rejected(item, reason) if reason else item, source, settings)
    return [inputs[key] for key in sorted(inputs)]


def _deidentify(item: dict, source: SourceEntry, settings: Settings) -> dict:
    """Free text a source carries (reports, captions, QA answers), reasons that quote its files and
    cells, and file names that hold personal data are de-identified here, where they enter the
    pipeline: no plan, stage, prompt, record or log ever sees them raw. A renamed input is published
    under its pseudonym and read from ``file_relpath``; without MEDTRINITY_DEID_SALT it is rejected."""
    relpath = item["source_relpath"]
    if phi_in_path(relpath):
        try:
            salt = salt_for(source, settings)
        except MedtrinityError:
            salt = ""
            item = rejected(
                item, Reason.of(f"{NAME_HOLDS_PHI}; set MEDTRINITY_DEID_SALT to publish it under a pseudonym")
            )
        item.update(source_relpath=published_path(relpath, salt), file_relpath=relpath)
    if item.get("reference_text"):
        item["reference_text"] = deidentify(item["reference_text"])
    reason = reject_of(item)
    return rejected(item, reason.reworded(clean_reason(reason.text, name_aliases(item)))) if reason else item


def _error(exc: BaseException) -> str:
    """A listing file's error as its type and its message, de-identified and capped (it may quote the file)."""
    return f"{type(exc).__name__}: {quote(exc)}"


def _escape_reason(root: Path, item: dict) -> Reason | None:
    """Why a file the input would open (its image or series files, its label or annotations) leaves
    the source directory, if one does."""
    images = item.get("member_files") or [item["source_relpath"]]
    labels = item.get("annotation_files") or ([item["label_relpath"]] if item.get("label_relpath") else [])
    for relpaths, annotation in ((images, False), (labels, True)):
        for relpath in relpaths:
            try:
                confined(root, relpath)
            except InputRejected as exc:
                return Reason.of("its annotation", exc.reason.text) if annotation else exc.reason
    return None


def _listing_file(source: SourceEntry, root: Path, relpath: str) -> Path:
    """A file a layout reads to list its inputs (dataset.json, a table, a COCO JSON), confined as
    the inputs are."""
    try:
        return confined(root, relpath)
    except InputRejected as exc:
        raise MedtrinityError(f"source {source.id}: cannot read {relpath}: {exc}") from None


def _files(folder: Path) -> list[Path]:
    """Every entry of ``folder`` that is not a folder: broken links and special files are inputs too,
    so that they end as rejects with a reason instead of vanishing."""
    return sorted(p for p in folder.iterdir() if not p.is_dir()) if folder.is_dir() else []


def _msd(source: SourceEntry, root: Path) -> dict[str, dict]:
    """Medical Segmentation Decathlon: ``dataset.json`` lists image/label pairs (``training``) and
    images without labels (``test``, for an expert to label); image files in ``imagesTr`` and
    ``imagesTs`` that it does not list are rejected, so every file there is accounted for."""
    listing = _listing_file(source, root, "dataset.json")
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
        for entry in json.loads(listing.read_text()).get("test") or []:
            image = Path(entry["image"] if isinstance(entry, dict) else entry).as_posix()
            inputs[image] = {"source_relpath": image, "label_relpath": None}
    except JSON_ERRORS as exc:
        raise MedtrinityError(
            f"source {source.id}: {listing} is not a Decathlon dataset.json ({_error(exc)})"
        ) from None
    for key, item in inputs.items():
        if _escape_reason(root, item):
            inputs[key] = rejected(item, Reason.of(OUTSIDE))
    for folder in ("imagesTr", "imagesTs"):
        for path in _files(root / folder):
            relpath = f"{folder}/{path.name}"
            inputs.setdefault(relpath, rejected({"source_relpath": relpath}, Reason.of("not listed in dataset.json")))
    return inputs


def _nnunet(source: SourceEntry, root: Path) -> dict[str, dict]:
    """nnU-Net v2 raw layout: ``imagesTr/<case>_<channel:04d><file_ending>`` with
    ``labelsTr/<case><file_ending>``. Every channel file is an input (each is an image in its own
    right, e.g. BraTS's FLAIR, T1, T1ce, T2), paired with its case's label map."""
    listing = _listing_file(source, root, "dataset.json")
    if not listing.is_file():
        raise SourceNotFound(f"source {source.id}: {listing} is missing (expected the nnU-Net raw layout)")
    try:
        ending = json.loads(listing.read_text())["file_ending"]
    except JSON_ERRORS as exc:
        raise MedtrinityError(f"source {source.id}: {listing} is not an nnU-Net dataset.json ({_error(exc)})") from None
    inputs = {}
    for path in _files(root / "imagesTr"):
        relpath = f"imagesTr/{path.name}"
        stem = path.name.removesuffix(ending)
        case, _, channel = stem.rpartition("_")
        if not path.name.endswith(ending) or not case or not (len(channel) == 4 and channel.isdigit()):
            named = "not named <case>_<channel 0000>"
            inputs[relpath] = rejected({"source_relpath": relpath}, Reason(named, f"{named}{ending}"))
        else:
            inputs[relpath] = {"source_relpath": relpath, "label_relpath": f"labelsTr/{case}{ending}"}
            if source.channels:
                inputs[relpath]["sequence"] = _channel_name(source, str(int(channel)))
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
            inputs[relpath] = rejected({"source_relpath": relpath}, Reason.of("mask file without a matching image"))
    return inputs


def _image_table(source: SourceEntry, root: Path) -> dict[str, dict]:
    """Images annotated by CSV tables: rows are grouped by image across tables (one row per box is
    common); images no table mentions, and labels the catalog does not define, are rejected."""
    layout = source.table
    grouped: dict[str, list[tuple[TableFile, dict]]] = {}
    for table in layout.files:
        for name, line in _table_lines(source, root, table):
            grouped.setdefault(name, []).append((table, line))
    inputs = {}
    for name, lines in grouped.items():
        relpath = posixpath.normpath(f"{layout.images_dir}/{name}")
        try:
            confined(root / layout.images_dir, name)  # the name itself: "/etc/x" would join as images/etc/x
            inputs[relpath] = {"source_relpath": relpath, **table_annotations(source, lines)}
        except InputRejected as exc:
            inputs[relpath] = rejected({"source_relpath": relpath}, exc.reason)
    tables = {posixpath.normpath(table.path) for table in layout.files}
    listed_in = ", ".join(sorted(Path(t).name for t in tables))
    for relpath in _walk(root, layout.images_dir):
        if relpath not in tables:
            inputs.setdefault(relpath, rejected({"source_relpath": relpath}, Reason.of(f"not listed in {listed_in}")))
    return inputs


def _table_lines(source: SourceEntry, root: Path, table: TableFile):
    """(image path relative to ``images_dir``, row) for every row of one CSV."""
    path = _listing_file(source, root, table.path)
    if not path.is_file():
        raise SourceNotFound(f"source {source.id}: annotation table {path} is missing")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=table.delimiter, restval="")  # a short row: empty cells
        try:
            wanted = [
                table.image_column,
                table.label_column,
                *table.text_columns,
                *(table.label_columns or []),
                *(table.box_columns or []),
            ]
            missing = [c for c in wanted if c and c not in (reader.fieldnames or [])]
            if missing:
                found = ", ".join(quote(c) for c in reader.fieldnames or [])
                raise MedtrinityError(f"source {source.id}: {path.name} has no column(s) {missing}; it has [{found}]")
            for line in reader:
                name = line[table.image_column].strip() + table.image_suffix
                if table.image_rewrite:
                    name = re.sub(table.image_rewrite[0], table.image_rewrite[1], name)
                yield name, line
        except (csv.Error, UnicodeDecodeError) as exc:
            raise MedtrinityError(
                f"source {source.id}: table {table.path} is not a readable CSV (line {reader.line_num}: {exc})"
            ) from None


def _coco(source: SourceEntry, root: Path) -> dict[str, dict]:
    """COCO detection JSON: each image with its boxes (``bbox`` is x, y, width, height); category
    names are looked up in the catalog; images the JSON does not list are rejected."""
    layout = source.coco
    listing = _listing_file(source, root, layout.annotations)
    if not listing.is_file():
        raise SourceNotFound(f"source {source.id}: COCO file {listing} is missing")
    try:
        coco = json.loads(listing.read_text())
        categories = {c["id"]: c["name"] for c in coco["categories"]}
        images = {image["id"]: image["file_name"] for image in coco["images"]}
        annotations = coco.get("annotations", [])
    except JSON_ERRORS as exc:
        raise MedtrinityError(f"source {source.id}: {listing} is not COCO JSON ({_error(exc)})") from None
    inputs = {}
    for name in map(str, images.values()):
        relpath = f"{layout.images_dir}/{name}"
        try:
            confined(root / layout.images_dir, name)  # the name itself: "/etc/x" would join as images//etc/x
            inputs[relpath] = {"source_relpath": relpath, "annotation_boxes": []}
        except InputRejected as exc:
            inputs[relpath] = rejected({"source_relpath": relpath}, exc.reason)
    for annotation in annotations:
        key = f"{layout.images_dir}/{images.get(annotation.get('image_id'))}"
        item = inputs.get(key)
        if item is None or item.get("reject_reason"):
            continue  # an annotation of an unknown image has no file to account for
        name = categories.get(annotation.get("category_id"))
        label = source.label_named(name) if name else None
        box = annotation.get("bbox")
        if label is None:
            category = _quoted(name or annotation.get("category_id"))
            undefined = "category is not defined by the catalog entry"
            inputs[key] = rejected(item, Reason(undefined, f"category {category} is not defined by the catalog entry"))
        elif not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            no_box = Reason(
                "annotation has no valid bbox", f"annotation {_quoted(annotation.get('id'))} has no valid bbox"
            )
            inputs[key] = rejected(item, no_box)
        else:
            x, y, w, h = box
            item["annotation_boxes"].append({"label": label.name, "bbox_xyxy": [x, y, x + w, y + h]})
    for path in _files(root / layout.images_dir):
        relpath = f"{layout.images_dir}/{path.name}"
        unlisted = Reason.of(f"not listed in {layout.annotations}")
        inputs.setdefault(relpath, rejected({"source_relpath": relpath}, unlisted))
    return inputs


def _quoted(value) -> str:
    """A COCO id or name as a reason shows it: numbers as they are, text de-identified and capped."""
    return str(value) if isinstance(value, int | float) else quote(value)


def _class_folders(source: SourceEntry, root: Path) -> dict[str, dict]:
    """One folder per class under ``images_dir``; the folder names the image's label."""
    images_dir = root / source.class_folders.images_dir
    if not images_dir.is_dir():
        raise SourceNotFound(f"source {source.id}: {images_dir} is missing (expected one folder per class)")
    inputs = {}
    for path in _files(images_dir):
        relpath = f"{source.class_folders.images_dir}/{path.name}"
        inputs[relpath] = rejected({"source_relpath": relpath}, Reason.of("not inside a class folder"))
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        label = source.label_named(folder.name)
        for path in _files(folder):
            relpath = f"{source.class_folders.images_dir}/{folder.name}/{path.name}"
            if label is None:
                not_a_label = "folder is not a label of the catalog entry"
                text = f"folder {folder.name!r} is not a label of the catalog entry"
                inputs[relpath] = rejected({"source_relpath": relpath}, Reason(not_a_label, text))
            else:
                inputs[relpath] = {"source_relpath": relpath, "image_labels": [label.name]}
    return inputs


def _paired_files(source: SourceEntry, root: Path) -> dict[str, dict]:
    """Every file under the source directory: an image (its path matches ``image_pattern``), the
    label of one, or a reject, so that stray files are accounted for rather than skipped."""
    layout = source.paired_files
    pattern = re.compile(layout.image_pattern)
    files = _walk(root, ".")
    inputs, labels = {}, set()
    for relpath in files:
        match = pattern.fullmatch(relpath)
        if not match:
            continue
        label = posixpath.normpath(layout.label_path.format(**match.groupdict()))
        inputs[relpath] = {"source_relpath": relpath, "label_relpath": label}
        if match.groupdict().get("channel") is not None:
            inputs[relpath]["sequence"] = _channel_name(source, match["channel"])
        labels.add(label)
    for relpath in files:
        if relpath not in inputs and relpath not in labels:
            inputs[relpath] = rejected({"source_relpath": relpath}, Reason.of(NOT_IN_LAYOUT))
    return inputs


def _channel_name(source: SourceEntry, key: str) -> str:
    return (source.channels or {}).get(key, key)


def _walk(root: Path, folder: str) -> list[str]:
    """Paths (relative to ``root``, "/"-separated) of every entry under ``folder`` that is not a
    folder, without following folder links (no loops); broken links are listed, to be rejected."""
    return sorted(
        posixpath.normpath(Path(parent, name).relative_to(root).as_posix())
        for parent, _, names in os.walk(root / folder)
        for name in names
    )


LISTERS = {
    "msd": _msd,
    "nnunet": _nnunet,
    "paired_files": _paired_files,
    "series": list_dicom_series,
    "dicomweb": list_dicom_series,  # the server's series, retrieved into the mirror
    "image_mask": _image_mask,
    "image_table": _image_table,
    "coco": _coco,
    "class_folders": _class_folders,
}


def check_staged(source: SourceEntry, settings: Settings) -> tuple[list[dict], list[str]]:
    """The inputs a run would find, and what is wrong with the staged copy before any pixel is read: a missing
    directory or listing, files the layout cannot place, and files an input names (a series its own) missing."""
    try:
        inputs = list_inputs(source, settings)
    except MedtrinityError as exc:
        return [], [str(exc)]
    root, problems = source.location_path(settings), []
    for item in inputs:
        key, label, series = item["source_relpath"], item.get("label_relpath"), item.get("member_files")
        missing = [p for p in [*(series or []), *(item.get("annotation_files") or [])] if not (root / p).is_file()]
        if item.get("reject_reason"):
            problems.append(f"{key}: {item['reject_reason']}")
        elif missing:  # a series is checked by its own files, named by pseudonym as its listing names them
            names = ", ".join(pseudonym(salt_for(source, settings), p, "file") for p in missing[:8])
            problems.append(f"{key}: {len(missing)} of its files are missing: {names}")
        elif series is None and not (root / (item.get("file_relpath") or key)).is_file():
            problems.append(f"{key}: listed but missing")
        elif label and not (root / label).is_file():
            problems.append(f"{key}: its annotation {label} is missing")
    return inputs, problems
