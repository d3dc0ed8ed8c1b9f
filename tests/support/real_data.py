"""Real images that no one here made, staged as catalog-style sources: the DICOM files of pydicom's tests
and of the pydicom-data package as one mixed export, the head CT with bone masks of Debian's
``invesalius-examples`` as a Decathlon-layout NIfTI source, and nibabel's bundled test volumes.

Each builder writes its files under a data directory and its catalog entry into a catalog directory
(read through MEDTRINITY_CATALOG_DIRS), and returns what the tests and the benchmark need to know about
the files without asking the pipeline: for DICOM, each file's kind as pydicom alone sees it."""

from __future__ import annotations

import json
import plistlib
import shutil
import subprocess
import sys
import tarfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

SALT = "real-data-tests"
"""MEDTRINITY_DEID_SALT of every real source here: the site's secret, which maps its files to published names."""
INVESALIUS_CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
INVESALIUS_MISSING = "Debian's invesalius-examples is not installed: apt-get install invesalius-examples"

IMAGE = "image"
"""An image object whose pixels pydicom decodes, every frame at least the settings' smallest side and
within their aspect ratio: one the pipeline should make records of."""
DEGENERATE = "degenerate"
"""An image object whose pixels decode but whose frames are too small or too long to be kept as images."""
UNDECODABLE = "undecodable"
"""An image object whose pixels pydicom cannot decode (truncated, inconsistent)."""
ANNOTATION = "annotation"
"""A SEG or RTSTRUCT, whose referenced series is not among the files."""
NOT_AN_IMAGE = "not an image"
"""A DICOM file without pixel data (reports, plans, waveforms, DICOMDIRs) or a file that is no DICOM
Part 10 file at all (no file meta, text, JSON, an ICC profile, a gzip archive)."""

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")

MIXED_DICOM_ENTRY = {
    "id": "real_dicom_mixed",
    "name": "pydicom's and pydicom-data's real DICOM files as one mixed export",
    "homepage": "https://github.com/pydicom/pydicom-data",
    "licence": "MIT (pydicom and pydicom-data)",
    "modality": "OT",  # a default: each series says its own
    "body_region": "body",
    "format": "dicom",
    "layout": "series",
    "cine": {"frames": 3},
    "labels": {},
}
CRANIUM_ENTRY = {
    "id": "invesalius_cranium_ct",
    "name": "InVesalius example head CT (Cranium) with its bone mask",
    "homepage": "https://invesalius.github.io/",
    "licence": "GPL-2.0 (Debian package invesalius-examples)",
    "modality": "CT",
    "body_region": "head",
    "format": "nifti",
    "layout": "msd",
    "labels": {1: {"name": "bone", "kind": "organ"}},
}
NIBABEL_ENTRY = {
    "id": "nibabel_test_volumes",
    "name": "nibabel's bundled test volumes (MR anatomy and functional series)",
    "homepage": "https://nipy.org/nibabel/",
    "licence": "MIT (nibabel)",
    "modality": "MR",
    "body_region": "head",
    "format": "nifti",
    "layout": "msd",
    "labels": {},
}


@dataclass(frozen=True)
class DicomFile:
    """One staged file as pydicom alone sees it."""

    relpath: str
    kind: str
    modality: str | None = None
    syntax: str | None = None
    """The transfer syntax's name, e.g. "JPEG-LS Lossless Image Compression"."""
    compressed: bool = False
    series_uid: str | None = None
    frames: int = 0
    rows: int = 0
    columns: int = 0


def write_entry(catalog: Path, entry: dict, location: Path) -> None:
    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / f"{entry['id']}.yaml").write_text(yaml.safe_dump({**entry, "location": str(location)}))


def environment(root: Path, knowledge_dir: Path) -> dict[str, str]:
    """Settings for runs of the real sources staged under ``root``, in process."""
    return {
        "MEDTRINITY_DATA_DIR": str(root / "data"),
        "MEDTRINITY_CATALOG_DIRS": str(root / "catalog"),
        "MEDTRINITY_SAMPLES_DIR": str(root / "samples"),
        "MEDTRINITY_CACHE_DIR": str(root / "cache"),
        "MEDTRINITY_OUTPUT": str(root / "out"),
        "MEDTRINITY_KNOWLEDGE_DIR": str(knowledge_dir),
        "MEDTRINITY_DEID_SALT": SALT,
        "MEDTRINITY_RUNNER": "inprocess",
    }


def dicom_corpus() -> list[tuple[Path, str]]:
    """Every file of pydicom's test files and of pydicom-data, with its place in the staged tree."""
    import pydicom.data

    test_files = Path(pydicom.data.__file__).parent / "test_files"
    corpus = []
    for name in pydicom.data.get_testdata_files():
        path = Path(name)
        if path.is_file():
            inside = path.is_relative_to(test_files)
            corpus.append(
                (path, f"pydicom/{path.relative_to(test_files).as_posix()}" if inside else f"pydicom-data/{path.name}")
            )
    if sum(relpath.startswith("pydicom-data/") for _, relpath in corpus) < 60:
        raise RuntimeError("pydicom-data's files are missing: .venv/bin/pip install pydicom-data")
    return sorted(corpus, key=lambda item: item[1])


def stage_mixed_dicom(data: Path, catalog: Path, min_side: int, max_aspect: float) -> tuple[Path, list[DicomFile]]:
    """Every real DICOM file in one folder tree, as a site's mixed export, and its catalog entry.

    pydicom's corpus derives many files from a few originals and keeps their UIDs: MR_small in ten
    encodings under one SOP Instance UID, CR, MR, US and NM images under one SeriesInstanceUID. A site's
    export never holds two objects under one SOP Instance UID, so each file whose UIDs it shares with
    another object gets study, series and instance UIDs of its own, derived from its path; its pixel
    data, transfer syntax and every other element stay as they were. Files in real multi-file series
    (the DICOMDIR test studies) and files pydicom cannot write back are copied byte for byte."""
    root = data / MIXED_DICOM_ENTRY["id"]
    corpus = dicom_corpus()
    headers = {relpath: _header(path) for path, relpath in corpus}
    shared = _shared_identities(headers)
    for path, relpath in corpus:
        target = root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if relpath not in shared or not _write_with_own_uids(path, target, relpath):
            shutil.copyfile(path, target)
    write_entry(catalog, MIXED_DICOM_ENTRY, root)
    return root, [classify(root / relpath, relpath, min_side, max_aspect) for _, relpath in corpus]


def _header(path: Path):
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # anything pydicom cannot read is copied as it is
            return None


def _shared_identities(headers: dict) -> set[str]:
    """Files whose SOP Instance UID another file repeats, or whose series is no stack of slices (more
    than one file, not all distinct instances of one SOP class and size at distinct positions): the
    ones a real export would never hold as they are."""
    with_uids = {relpath: h for relpath, h in headers.items() if h is not None and "SOPInstanceUID" in h}
    instances = Counter(str(h.SOPInstanceUID) for h in with_uids.values())
    series = defaultdict(list)
    for header in with_uids.values():
        series[str(header.get("SeriesInstanceUID"))].append(header)

    def is_stack(members: list) -> bool:
        kinds = {(str(h.get("SOPClassUID")), h.get("Rows"), h.get("Columns")) for h in members}
        positions = [tuple(h.ImagePositionPatient) if "ImagePositionPatient" in h else None for h in members]
        return len(kinds) == 1 and None not in positions and len(set(positions)) == len(members)

    return {
        relpath
        for relpath, header in with_uids.items()
        if instances[str(header.SOPInstanceUID)] > 1
        or (len(members := series[str(header.get("SeriesInstanceUID"))]) > 1 and not is_stack(members))
    }


def _write_with_own_uids(path: Path, target: Path, relpath: str) -> bool:
    import pydicom
    from pydicom.uid import generate_uid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
            for keyword in UID_KEYWORDS:
                setattr(ds, keyword, generate_uid(entropy_srcs=[relpath, keyword]))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.save_as(target)
        except Exception:  # a file pydicom cannot write back is copied byte for byte
            target.unlink(missing_ok=True)
            return False
    return True


def classify(path: Path, relpath: str, min_side: int, max_aspect: float) -> DicomFile:
    """What ``path`` is, by pydicom alone: its kind, modality, transfer syntax, series and size."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # not a DICOM Part 10 file pydicom reads
            return DicomFile(relpath, NOT_AN_IMAGE)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        facts = {
            "modality": str(ds.get("Modality") or "") or None,
            "syntax": syntax.name if syntax else None,
            "compressed": bool(syntax and syntax.is_compressed) or syntax == pydicom.uid.DeflatedExplicitVRLittleEndian,
            "series_uid": str(ds.get("SeriesInstanceUID") or "") or None,
        }
        if str(ds.get("SOPClassUID")) in (SEG_STORAGE, RTSTRUCT_STORAGE):
            return DicomFile(relpath, ANNOTATION, **facts)
        if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
            return DicomFile(relpath, NOT_AN_IMAGE, **facts)
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
            rows, columns = int(ds.Rows), int(ds.Columns)
            ds.pixel_array  # noqa: B018 - decoding is the check
        except Exception:  # pixels pydicom cannot decode
            return DicomFile(relpath, UNDECODABLE, **facts)
    kind = (
        IMAGE
        if min(rows, columns) >= min_side and max(rows, columns) <= max_aspect * min(rows, columns)
        else DEGENERATE
    )
    return DicomFile(relpath, kind, frames=frames, rows=rows, columns=columns, **facts)


def stage_cranium(data: Path, catalog: Path) -> Path:
    """InVesalius's Cranium project as a Decathlon-layout source: the CT and its bone mask as NIfTI.

    An ``.inv3`` project is a tar archive: ``main.plist`` gives the CT matrix's file, dtype, shape
    (slices, rows, columns) and spacing (columns, rows, slices in mm); each ``mask_N.plist`` names its
    mask file and the HU threshold it was drawn with. A mask file holds one more slice, row and column
    than the CT (InVesalius keeps flags at index 0) and marks voxels inside with 255. The bone mask is
    the one with the highest lower threshold (226 HU; the other, from -142 HU, takes in the soft tissue).
    The matrix is stored as InVesalius displays it: columns toward the patient's left as in DICOM,
    rows from posterior to anterior (the CT table lies at row 0, the face at the last rows), slices from
    the jaw up to the vertex; the NIfTI affine says exactly that."""
    root = data / CRANIUM_ENTRY["id"]
    with tarfile.open(INVESALIUS_CRANIUM) as project:
        members = {Path(member.name).name: member for member in project.getmembers() if member.isfile()}

        def read(name: str) -> bytes:
            return project.extractfile(members[name]).read()

        main = plistlib.loads(read("main.plist"))
        matrix = main["matrix"]
        ct = np.frombuffer(read(matrix["filename"]), dtype=matrix["dtype"]).reshape(matrix["shape"])
        masks = [plistlib.loads(read(name)) for name in main["masks"].values()]
        bone = max(masks, key=lambda mask: mask["threshold_range"][0])
        mask = np.frombuffer(read(bone["mask_file"]), dtype=np.uint8).reshape(bone["mask_shape"])[1:, 1:, 1:]
    import nibabel as nib

    column_mm, row_mm, slice_mm = main["spacing"]
    affine = np.diag([-column_mm, row_mm, slice_mm, 1.0])  # +column: left, +row: anterior, +slice: superior
    for folder, volume in (("imagesTr", ct), ("labelsTr", (mask > 127).astype(np.uint8))):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine), root / folder / "cranium.nii.gz"
        )
    training = [{"image": "./imagesTr/cranium.nii.gz", "label": "./labelsTr/cranium.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps({"name": "Cranium", "training": training}))
    write_entry(catalog, CRANIUM_ENTRY, root)
    return root


def nibabel_volumes() -> list[Path]:
    """nibabel's bundled NIfTI test files: MR anatomy, functional series, tiny volumes and a CIFTI matrix."""
    import nibabel

    folder = Path(nibabel.__file__).parent / "tests" / "data"
    return sorted(path for path in folder.iterdir() if path.name.endswith((".nii", ".nii.gz")))


def stage_nibabel_volumes(data: Path, catalog: Path) -> dict[str, Path]:
    """nibabel's test volumes as the unlabelled (``test``) images of a Decathlon-layout source; returns
    each staged file by its path in the source."""
    root = data / NIBABEL_ENTRY["id"]
    (root / "imagesTs").mkdir(parents=True, exist_ok=True)
    staged = {}
    for path in nibabel_volumes():
        staged[f"imagesTs/{path.name}"] = shutil.copyfile(path, root / "imagesTs" / path.name)
    (root / "dataset.json").write_text(json.dumps({"training": [], "test": [f"./{p}" for p in staged]}))
    write_entry(catalog, NIBABEL_ENTRY, root)
    return staged


@dataclass(frozen=True)
class RealSources:
    dicom_files: list[DicomFile]
    cranium: Path | None
    """None where invesalius-examples is not installed."""
    nibabel_volumes: dict[str, Path]


def stage_real_sources(root: Path, min_side: int, max_aspect: float) -> RealSources:
    """All three sources under ``root`` (data/, catalog/), as ``environment(root, ...)`` expects them."""
    data, catalog = root / "data", root / "catalog"
    _, dicom_files = stage_mixed_dicom(data, catalog, min_side, max_aspect)
    cranium = stage_cranium(data, catalog) if INVESALIUS_CRANIUM.is_file() else None
    return RealSources(dicom_files, cranium, stage_nibabel_volumes(data, catalog))


@dataclass(frozen=True)
class Published:
    """What a run left in the output store: the manifest (None if none was written), every work record,
    and the records of its shards."""

    manifest: dict | None
    works: list[dict]
    records: list[dict]

    def used(self) -> set[str]:
        return {key for work in self.works for key in work["used"]}

    def rejected(self) -> dict[str, str]:
        return {r["input"]: r["reason"] for work in self.works for r in work["rejected"]}

    def quarantined(self) -> dict[str, list[str]]:
        """Reasons of the quarantined records, by input."""
        reasons = defaultdict(list)
        for work in self.works:
            for record in work["quarantined"]:
                reasons[record["input"]] += record["reasons"]
        return dict(reasons)

    def records_by_input(self) -> dict[str, list[dict]]:
        grouped = defaultdict(list)
        for record in self.records:
            grouped[record["source_relpath"]].append(record)
        return dict(grouped)


def published(output: Path, source_id: str) -> Published:
    import pyarrow.parquet as pq

    folder = output / "sources" / source_id
    manifest = folder / "manifest.json"
    works = [json.loads(path.read_text()) for path in sorted((folder / "work").glob("*.json"))]
    records = [
        record
        for path in sorted((folder / "shards").glob("*.parquet"))
        for record in pq.read_table(path, columns=RECORD_COLUMNS).to_pylist()
    ]
    return Published(json.loads(manifest.read_text()) if manifest.is_file() else None, works, records)


RECORD_COLUMNS = [
    "id", "source_relpath", "modality", "width", "height", "axis", "slice_index", "patient_orientation",
    "view", "rois", "coarse_caption", "description",
]  # fmt: skip
"""The record columns the tests read: everything but the image bytes."""


def published_names(source_id: str, env: dict[str, str]) -> dict[str, str]:
    """Each file's path in the source -> the name the run publishes its input under, as the site that holds
    the salt gets it: ``medtrinity sources pseudonyms SOURCE``."""
    done = subprocess.run(
        [sys.executable, "-m", "medtrinity_tasks.cli", "sources", "pseudonyms", source_id],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"sources pseudonyms {source_id} failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(line.rsplit(" -> ", 1) for line in done.stdout.splitlines() if " -> " in line)


IDENTIFYING = (
    "PatientName",
    "PatientID",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "OperatorsName",
)
"""The header fields of the corpus that name a patient, a visit, a place or a person."""


def header_identifiers(paths: list[Path]) -> set[str]:
    """The identifying values the files' headers hold that cannot turn up in an output by chance: whole
    values from 5 characters that are no single word (a DICOM name, an id of letters and digits, words
    with spaces), and ids of digits alone from 8 (a number or a hexadecimal pseudonym may hold fewer)."""
    import pydicom

    found = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            except Exception:  # no header to take identifiers from
                continue
            for keyword in IDENTIFYING:
                value = str(ds.get(keyword) or "").strip()
                if len(value) >= 8 if value.isdigit() else len(value) >= 5 and not value.isalpha():
                    found.add(value)
    return found


def output_texts(output: Path, source_id: str) -> dict[str, str]:
    """Every file a run of ``source_id`` wrote, as text: JSON and HTML as they are, Parquet rows without
    their image bytes."""
    import pyarrow.parquet as pq

    texts = {}
    for path in sorted((output / "sources" / source_id).rglob("*")):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            texts[str(path)] = json.dumps(
                table.drop_columns(["image"]).to_pylist() if "image" in table.column_names else table.to_pylist(),
                default=str,
            )
        elif path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    return texts
