"""A hostile corpus, written on demand: what a careless export or a malicious provider puts in front
of the pipeline. Shared by tests/test_hostile.py and bench/hostile.py.

- personal data in every text field a source carries (report and caption columns, label cells,
  COCO category names, file names), as ``SECRETS``: none may reach an output, a log or a failure record;
- every path-escape form for each 2D and volume layout: ``../`` and absolute names in tables, COCO
  and dataset.json, a file that is a symbolic link leading out, a mask that is one, a linked folder
  in the middle of a path, a chain of links; their targets (``outside/``) are valid images that
  must never become records (they are 77 pixels wide, which no inside image is);
- compression bombs that stay small on disk: a gzip NIfTI and a PNG whose headers claim gigabytes,
  a zip and a tar.gz of a gigabyte of zeros;
- archives in the known extraction-bypass patterns (``..`` and absolute names, a link then a member
  written through it, links to links, a hard link to a file outside, a chain of links past PATH_MAX).
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SECRETS = {
    "name": "Johnathan Quixote",
    "mrn": "88123456",
    "dob": "03/14/1951",
    "phone": "617-555-0143",
    "email": "jquixote@mailhost.example",
    "address": "42 Windmill Lane",
    "accession": "ACC7781234",
    "institution": "La Mancha General Hospital",
    "dicom_name": "QUIXOTE^JOHNATHAN",
}
"""Planted identifiers; each is written next to the label a real export would give it."""

REPORT = (
    f"Patient: {SECRETS['name']}, MRN {SECRETS['mrn']}, DOB {SECRETS['dob']}. Seen at "
    f"{SECRETS['institution']}; call {SECRETS['phone']} or {SECRETS['email']}; lives at "
    f"{SECRETS['address']}. Accession: {SECRETS['accession']}. A nodule in the right upper lung zone."
)
PHI_FILE_NAME = f"{SECRETS['dicom_name']}_2019-03-04.png"
"""An image named after its patient and day: published under a pseudonym, read under its name."""
OUTSIDE_WIDTH = 77
"""The width of every image outside the source roots: a record this wide read something it must not."""
BOMB_SIDE = 40_000
"""A PNG bomb's claimed side: 1.6 billion pixels, 16 times the default limit, ~2 MB on disk."""
ZERO_GIB = 1
"""The archive bombs' uncompressed size in GiB."""


@dataclass
class HostileCorpus:
    root: Path
    data_dir: Path
    """MEDTRINITY_DATA_DIR: every hostile source's root is below it."""
    catalog_dir: Path
    """MEDTRINITY_CATALOG_DIRS: the hostile sources' catalog entries."""
    outside: Path
    """What no source may read: valid images, OUTSIDE_WIDTH pixels wide."""
    sources: list[str]
    archives: dict[str, Path] = field(default_factory=dict)
    """Archive name -> path: the bypass patterns and the bombs, for ``sources unpack``."""


def _png(path: Path, width: int = 64, height: int = 64, value: int = 90) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((height, width), value, dtype=np.uint8)
    pixels[height // 3 : height // 2, width // 3 : width // 2] = 200
    Image.fromarray(pixels).save(path)


def _mask(path: Path, width: int = 64, height: int = 64) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 3 : height // 2, width // 3 : width // 2] = 255
    Image.fromarray(mask).save(path)


def zeros_deflated(total: int) -> tuple[bytes, int, int]:
    """``total`` zero bytes as one raw deflate stream, with their Adler-32 and CRC-32: one MiB is
    compressed once, dictionary reset (a full flush), and its blocks repeated, so a gigabyte takes
    a second instead of a compressor's minute."""
    block = b"\0" * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = packer.compress(block) + packer.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(total, len(block))
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = repeated * count + tail.compress(b"\0" * rest) + tail.flush()
    adler, crc = 1, 0
    for _ in range(count):
        adler, crc = zlib.adler32(block, adler), zlib.crc32(block, crc)
    adler, crc = zlib.adler32(b"\0" * rest, adler), zlib.crc32(b"\0" * rest, crc)
    return stream, adler, crc


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, side: int = BOMB_SIDE) -> None:
    """A greyscale PNG of ``side`` x ``side`` zeros: a few MB on disk, gigabytes decoded."""
    stream, adler, _ = zeros_deflated(side * (side + 1))  # each row: filter byte 0, then its pixels
    idat = b"\x78\xda" + stream + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def nifti_bomb(path: Path, shape=(20_000, 20_000, 2_000), zeros_mb: int = 1024) -> None:
    """A .nii.gz whose header claims ``shape`` int16 voxels (1.6 TB) over ``zeros_mb`` of zeros, about
    1 MB on disk: reading what the header claims would take the machine down."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.write_bytes(_gzip(header.binaryblock + b"\0" * 4, zeros_mb << 20))


def _gzip(prefix: bytes, zeros: int) -> bytes:
    """A gzip file of ``prefix`` followed by ``zeros`` zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    stream, _, _ = zeros_deflated(zeros)
    crc, block = zlib.crc32(prefix), b"\0" * (1 << 20)
    count, rest = divmod(zeros, len(block))
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(b"\0" * rest, crc)
    size = (len(prefix) + zeros) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\0\0\0\0\0\x02\xff" + head + stream + struct.pack("<II", crc, size)


def _volume(path: Path, label: bool = False) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((48, 48, 6), dtype=np.int16 if not label else np.uint8)
    if label:
        data[18:28, 18:28, 2:4] = 1
    else:
        data[:] = 40
        data[18:28, 18:28, 2:4] = -20
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.5, 1.0])), str(path))


def _write_catalog(catalog: Path, entry: dict) -> None:
    import yaml

    catalog.mkdir(parents=True, exist_ok=True)
    (catalog / f"{entry['id']}.yaml").write_text(yaml.safe_dump(entry, sort_keys=False))


def _outside(outside: Path) -> None:
    _png(outside / "sentinel.png", width=OUTSIDE_WIDTH)
    _mask(outside / "sentinel_segmentation.png", width=OUTSIDE_WIDTH)
    (outside / "images").mkdir(parents=True, exist_ok=True)
    _png(outside / "images" / "sentinel.png", width=OUTSIDE_WIDTH)
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((OUTSIDE_WIDTH, 48, 6), 40, np.int16), np.eye(4)), str(outside / "vol.nii.gz"))


def _reports_source(root: Path, catalog: Path, outside: Path) -> str:
    """image_table: reports full of identifiers, a label cell that is one, escaping names, links."""
    images = root / "images"
    for n in range(4):
        _png(images / f"cxr_{n:03d}.png")
    _png(images / PHI_FILE_NAME)
    png_bomb(images / "bomb.png")
    (images / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    (images / "leads_out.png").symlink_to(outside / "sentinel.png")
    (images / "linked").symlink_to(outside / "images", target_is_directory=True)
    (images / "chain_a.png").symlink_to(images / "chain_b.png")
    (images / "chain_b.png").symlink_to(outside / "sentinel.png")
    rows = [
        *[(f"cxr_{n:03d}.png", "Nodule", REPORT) for n in range(4)],
        (PHI_FILE_NAME, "Nodule", REPORT),
        ("bomb.png", "No Finding", "No acute abnormality."),
        ("truncated.png", "No Finding", "No acute abnormality."),
        ("leads_out.png", "No Finding", REPORT),
        ("linked/sentinel.png", "No Finding", REPORT),
        ("chain_a.png", "No Finding", REPORT),
        ("../../outside/sentinel.png", "No Finding", REPORT),
        (str(outside / "sentinel.png"), "No Finding", REPORT),
        (f"{SECRETS['dicom_name']}_{SECRETS['dob'].replace('/', '')}.png", "No Finding", REPORT),
        ("cxr_000.png", f"Patient: {SECRETS['name']} MRN {SECRETS['mrn']}", REPORT),
    ]
    table = root / "table.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Label", "Report"])
        writer.writerows(rows)
    _write_catalog(
        catalog,
        {
            "id": "hostile_reports",
            "name": "Hostile reports (test corpus)",
            "homepage": None,
            "licence": "CC0-1.0",
            "modality": "XR",
            "body_region": "chest",
            "format": "image2d",
            "layout": "image_table",
            "table": {
                "images_dir": "images",
                "files": [
                    {
                        "path": "table.csv",
                        "image_column": "Image Index",
                        "label_column": "Finding Label",
                        "text_columns": ["Report"],
                    }
                ],
            },
            "location": str(root),
            "labels": {
                1: {"name": "pulmonary nodule", "kind": "finding", "organ": "lung", "source_name": "Nodule"},
                2: {"name": "no finding", "kind": "finding", "source_name": "No Finding"},
            },
            "min_pass_rate": 0.5,
        },
    )
    return "hostile_reports"


def _masks_source(root: Path, catalog: Path, outside: Path) -> str:
    """image_mask: a mask that leads out, an image that leads out, a linked masks folder entry."""
    for n in range(3):
        _png(root / "images" / f"lesion_{n}.png")
        _mask(root / "masks" / f"lesion_{n}_segmentation.png")
    _png(root / "images" / "mask_leads_out.png")
    (root / "masks" / "mask_leads_out_segmentation.png").symlink_to(outside / "sentinel_segmentation.png")
    (root / "images" / "image_leads_out.png").symlink_to(outside / "sentinel.png")
    _mask(root / "masks" / "image_leads_out_segmentation.png")
    _write_catalog(
        catalog,
        {
            "id": "hostile_masks",
            "name": "Hostile masks (test corpus)",
            "homepage": None,
            "licence": "CC0-1.0",
            "modality": "dermoscopy",
            "body_region": "skin",
            "format": "image2d",
            "layout": "image_mask",
            "image_mask": {
                "images_dir": "images",
                "masks_dir": "masks",
                "mask_suffix": "_segmentation.png",
                "mask_values": "binary",
            },
            "location": str(root),
            "labels": {
                1: {
                    "name": "pigmented skin lesion",
                    "kind": "lesion",
                    "organ": "skin",
                    "disease": "pigmented skin lesion",
                }
            },
            "min_pass_rate": 0.5,
        },
    )
    return "hostile_masks"


def _coco_source(root: Path, catalog: Path, outside: Path) -> str:
    """coco: escaping file names, a category named after a patient, a caption-like category."""
    for n in range(3):
        _png(root / "images" / f"img_{n}.png")
    coco = {
        "images": [
            *[{"id": n, "file_name": f"img_{n}.png"} for n in range(3)],
            {"id": 10, "file_name": "../../outside/sentinel.png"},
            {"id": 11, "file_name": str(outside / "sentinel.png")},
            {"id": 12, "file_name": "..\\..\\outside\\sentinel.png"},
        ],
        "categories": [
            {"id": 1, "name": "Nodule"},
            {"id": 2, "name": f"Dr. {SECRETS['name']} {SECRETS['phone']}"},
        ],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [20, 20, 12, 12]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [20, 20, 12, 12]},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [10, 10, 8, 8]},
            *[{"id": 4 + i, "image_id": i, "category_id": 1, "bbox": [5, 5, 5, 5]} for i in (10, 11, 12)],
        ],
    }
    (root / "annotations.json").write_text(json.dumps(coco))
    _write_catalog(
        catalog,
        {
            "id": "hostile_coco",
            "name": "Hostile COCO (test corpus)",
            "homepage": None,
            "licence": "CC0-1.0",
            "modality": "XR",
            "body_region": "chest",
            "format": "image2d",
            "layout": "coco",
            "coco": {"images_dir": "images", "annotations": "annotations.json"},
            "location": str(root),
            "labels": {1: {"name": "pulmonary nodule", "kind": "finding", "organ": "lung", "source_name": "Nodule"}},
            "min_pass_rate": 0.5,
        },
    )
    return "hostile_coco"


def _volumes_source(root: Path, catalog: Path, outside: Path) -> str:
    """msd: dataset.json naming files outside, a label that leads out, a gzip bomb, good volumes."""
    for n in range(2):
        _volume(root / "imagesTr" / f"case_{n}.nii.gz")
        _volume(root / "labelsTr" / f"case_{n}.nii.gz", label=True)
    nifti_bomb(root / "imagesTr" / "bomb.nii.gz")
    _volume(root / "labelsTr" / "bomb.nii.gz", label=True)
    _volume(root / "imagesTr" / "label_leads_out.nii.gz")
    (root / "labelsTr" / "label_leads_out.nii.gz").symlink_to(outside / "vol.nii.gz")
    (root / "imagesTr" / "image_leads_out.nii.gz").symlink_to(outside / "vol.nii.gz")
    _volume(root / "labelsTr" / "image_leads_out.nii.gz", label=True)
    training = [
        *[{"image": f"./imagesTr/case_{n}.nii.gz", "label": f"./labelsTr/case_{n}.nii.gz"} for n in range(2)],
        {"image": "./imagesTr/bomb.nii.gz", "label": "./labelsTr/bomb.nii.gz"},
        {"image": "./imagesTr/label_leads_out.nii.gz", "label": "./labelsTr/label_leads_out.nii.gz"},
        {"image": "./imagesTr/image_leads_out.nii.gz", "label": "./labelsTr/image_leads_out.nii.gz"},
        {"image": "../outside/vol.nii.gz", "label": "./labelsTr/case_0.nii.gz"},
        {"image": str(outside / "vol.nii.gz"), "label": "./labelsTr/case_1.nii.gz"},
    ]
    (root / "dataset.json").write_text(json.dumps({"name": "hostile", "training": training, "test": []}))
    _write_catalog(
        catalog,
        {
            "id": "hostile_volumes",
            "name": "Hostile volumes (test corpus)",
            "homepage": None,
            "licence": "CC0-1.0",
            "modality": "CT",
            "body_region": "abdomen",
            "format": "nifti",
            "layout": "msd",
            "location": str(root),
            "labels": {1: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}},
            "min_pass_rate": 0.5,
        },
    )
    return "hostile_volumes"


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.size else None)


def bypass_archives(folder: Path, outside: Path) -> dict[str, Path]:
    """Tar and zip archives in the patterns that have written outside a destination before."""
    folder.mkdir(parents=True, exist_ok=True)
    archives = {}

    def tar(name: str, build) -> None:
        path = folder / name
        with tarfile.open(path, "w") as handle:
            build(handle)
        archives[name] = path

    tar("dotdot.tar", lambda t: _tar_member(t, "../../outside/evil_dotdot", b"x"))
    tar("absolute.tar", lambda t: _tar_member(t, str(outside / "evil_absolute"), b"x"))

    def link_then_write(t):
        _tar_member(t, "escape", type=tarfile.SYMTYPE, linkname=str(outside))
        _tar_member(t, "escape/evil_through_link", b"x")

    tar("link_then_write.tar", link_then_write)

    def relative_link_then_write(t):
        _tar_member(t, "up", type=tarfile.SYMTYPE, linkname="../../outside")
        _tar_member(t, "up/evil_relative_link", b"x")

    tar("relative_link_then_write.tar", relative_link_then_write)

    def link_to_link(t):
        _tar_member(t, "a", type=tarfile.SYMTYPE, linkname="b")
        _tar_member(t, "b", type=tarfile.SYMTYPE, linkname="../../outside")
        _tar_member(t, "a/evil_link_to_link", b"x")

    tar("link_to_link.tar", link_to_link)

    def hard_link(t):
        _tar_member(t, "passwd", type=tarfile.LNKTYPE, linkname=str(outside / "sentinel.png"))
        _tar_member(t, "passwd", b"overwritten")

    tar("hard_link.tar", hard_link)

    def path_max_chain(t):  # the PATH_MAX pattern: realpath stops resolving, lexical checks pass
        step = "d" * 247
        steps = "abcdefghijklmnop"
        path = ""
        for letter in steps:
            _tar_member(t, os.path.join(path, step), type=tarfile.DIRTYPE, mode=0o755)
            _tar_member(t, os.path.join(path, letter), type=tarfile.SYMTYPE, linkname=step)
            path = os.path.join(path, step)
        chain = os.path.join(*steps)
        _tar_member(t, os.path.join(chain, "l" * 254), type=tarfile.SYMTYPE, linkname="../" * len(steps))
        _tar_member(t, "escape", type=tarfile.SYMTYPE, linkname=os.path.join(chain, "l" * 254, "../../outside"))
        _tar_member(t, "escape/evil_path_max", b"x")

    tar("path_max_chain.tar", path_max_chain)

    def devices(t):
        _tar_member(t, "null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        _tar_member(t, "fifo", type=tarfile.FIFOTYPE)

    tar("devices.tar", devices)

    zipped = folder / "zip_escapes.zip"
    with zipfile.ZipFile(zipped, "w") as handle:
        handle.writestr("../../outside/evil_zip_dotdot", b"x")
        handle.writestr(str(outside / "evil_zip_absolute"), b"x")
        link = zipfile.ZipInfo("zip_link")
        link.external_attr = (0o120777 << 16) | 0x20
        handle.writestr(link, str(outside))
    archives[zipped.name] = zipped
    return archives


def bomb_archives(folder: Path, gib: int = ZERO_GIB) -> dict[str, Path]:
    """A zip and a tar.gz of one member of ``gib`` GiB of zeros, about 1 MB each."""
    folder.mkdir(parents=True, exist_ok=True)
    size = gib << 30
    stream, _, crc = zeros_deflated(size)
    name = b"zeros.bin"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(stream), size, len(name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(stream), size, len(name), 0, 0, 0, 0,
        0o100644 << 16, 0,
    )  # fmt: skip
    directory = central + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(directory), len(local) + len(name) + len(stream), 0)
    zipped = folder / "zeros.zip"
    zipped.write_bytes(local + name + stream + directory + end)
    info = tarfile.TarInfo("zeros.bin")
    info.size, info.mode = size, 0o644
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    record = tarfile.RECORDSIZE
    total = -(-(len(header) + size + 2 * tarfile.BLOCKSIZE) // record) * record  # data, end blocks, padding
    tarred = folder / "zeros.tar.gz"
    tarred.write_bytes(_gzip(header, total - len(header)))
    return {zipped.name: zipped, tarred.name: tarred}


def write_hostile_corpus(root: Path) -> HostileCorpus:
    """Every hostile source and archive under ``root`` (about 30 MB, a few seconds)."""
    data, catalog, outside = root / "data", root / "catalog", root / "outside"
    _outside(outside)
    sources = [
        build(data / name, catalog, outside)
        for name, build in (
            ("reports", _reports_source),
            ("masks", _masks_source),
            ("coco", _coco_source),
            ("volumes", _volumes_source),
        )
    ]
    corpus = HostileCorpus(root=root, data_dir=data, catalog_dir=catalog, outside=outside, sources=sources)
    corpus.archives = {**bypass_archives(root / "archives", outside), **bomb_archives(root / "bombs")}
    return corpus


def outside_files(corpus: HostileCorpus) -> set[str]:
    """Every path under the corpus's outside folder: the archive tests add none."""
    return {str(p.relative_to(corpus.outside)) for p in corpus.outside.rglob("*")}


def leaked_secrets(texts: dict[str, str]) -> dict[str, list[str]]:
    """Where each planted identifier was found: place -> the secrets in it."""
    found = {}
    for where, text in texts.items():
        hits = [kind for kind, secret in SECRETS.items() if secret.lower() in text.lower()]
        if hits:
            found[where] = hits
    return found


def output_texts(out: Path) -> dict[str, str]:
    """Every file the runs wrote, as text: Parquet rows without their image bytes, JSON and HTML as is."""
    import pyarrow.parquet as pq

    texts = {}
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pylist()
            for row in rows:
                row.pop("image", None)
            texts[str(path)] = json.dumps(rows, default=str)
        else:
            texts[str(path)] = path.read_text(errors="replace")
    return texts


def escaped_records(out: Path) -> list[str]:
    """Records (published or quarantined) whose image came from outside a source root."""
    import pyarrow.parquet as pq

    escaped = []
    for path in out.rglob("*.parquet"):
        for row in pq.read_table(path, columns=["source_relpath", "width"]).to_pylist():
            if row["width"] == OUTSIDE_WIDTH:
                escaped.append(f"{path.name}: {row['source_relpath']}")
    return escaped


PEAK_MARK = "medtrinity-peak-rss-kb"
_MEASURED = (
    "import sys\n"
    "from medtrinity_tasks.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
    f"print('{PEAK_MARK}', peak, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
"""The command, then its own peak resident memory in KiB (``VmHWM``: Linux's ``ru_maxrss`` carries
the parent's peak over into a child, which would measure the test process instead)."""


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str
    peak_mb: float
    """The command's peak resident memory: with the in-process runner, every decode happens in it."""


def run_cli(args: list[str], env: dict, timeout: float = 600) -> CliRun:
    """``medtrinity ARGS`` in a fresh Python, its peak memory measured by the process itself."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    lines = done.stderr.splitlines()
    peak = [int(line.split()[1]) for line in lines if line.startswith(PEAK_MARK)]
    stderr = "\n".join(line for line in lines if not line.startswith(PEAK_MARK))
    return CliRun(done.returncode, done.stdout, stderr, peak[0] / 1024 if peak else float("nan"))


def corpus_env(corpus: HostileCorpus, out: Path, base: dict | None = None) -> dict:
    """The environment a site would set for the corpus: its data directory and catalog, the
    in-process runner (so a run's memory is one process's), no knowledge retrieval."""
    env = dict(os.environ if base is None else base)
    env.update(
        MEDTRINITY_DATA_DIR=str(corpus.data_dir),
        MEDTRINITY_CATALOG_DIRS=str(corpus.catalog_dir),
        MEDTRINITY_OUTPUT=str(out),
        MEDTRINITY_RUNNER="inprocess",
        MEDTRINITY_KNOWLEDGE_TOP_K="0",
        MEDTRINITY_DEID_SALT="hostile-corpus",
    )
    return env
