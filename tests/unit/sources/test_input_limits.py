"""Inputs that claim more than they hold (compression bombs) end as rejects with their numbers, before
anything is decoded; reject reasons stay short whatever an input holds.

Every hostile file is written here, small on disk. The bombs are read in a child process through the
stages or readers the pipeline uses, with the limits at their defaults, and the child's peak memory
(VmHWM) is bounded."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import DeflatedExplicitVRLittleEndian

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.preprocess.planar import PlanarImageLoader
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.run.pipeline import input_stage
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.readers.dicom.image import read_dicom_image
from medtrinity_tasks.sources.readers.dicom.series import read_series, scan
from medtrinity_tasks.sources.readers.image2d import read_image
from medtrinity_tasks.sources.readers.limits import InputLimits, error_detail
from medtrinity_tasks.sources.readers.nifti import read_nifti
from tests.support import dicom_fixtures as fx
from tests.support.bombs import (
    deflated_dicom,
    dicom_claiming,
    nifti_claiming,
    nifti_with_extension,
    png_chunk,
    png_of_zeros,
    zlib_zeros,
)

PEAK_RSS_BOUND_KIB = 600 * 1024
"""What a child that reads one bomb may take at its peak, interpreter and libraries included (about 100 MiB)."""

VOLUME_ENTRY = {
    "id": "limits_ct", "name": "Hostile CT volumes", "homepage": None, "licence": "CC0-1.0", "modality": "CT",
    "body_region": "abdomen", "format": "nifti", "layout": "msd", "synthetic": True,
    "window": {"center": 40, "width": 400},
    "labels": {1: {"name": "liver", "kind": "organ"},
               2: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}},
}  # fmt: skip
IMAGE_ENTRY = {
    "id": "limits_tiles", "name": "Hostile tiles", "homepage": None, "licence": "CC0-1.0",
    "modality": "histopathology", "body_region": "colon", "format": "image2d", "layout": "image_mask",
    "image_mask": {"images_dir": "images", "masks_dir": "masks", "mask_suffix": ".png", "mask_values": "labels"},
    "synthetic": True, "labels": {1: {"name": "tumour", "kind": "lesion", "organ": "colon", "disease": "tumour"}},
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# reading in a child


PEAK_RSS_CODE = """
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
"""The child's own peak RSS in KiB. Its rusage would not do: at exec Linux carries the forking parent's high-water
mark into the child's ru_maxrss (and so into the parent's RUSAGE_CHILDREN), and this test process holds a
sentence encoder and a knowledge index (about 1 GiB)."""


def read_in_child(code: str, *args: str, **env: str) -> tuple[str, int]:
    """Run ``code`` (which prints reasons) in a fresh interpreter; return what it printed and its peak RSS in KiB."""
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + textwrap.dedent(PEAK_RSS_CODE), *args],
        capture_output=True,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MEDTRINITY_MAX_")}, **env},  # defaults
    )
    assert child.returncode == 0, child.stderr
    *printed, peak = child.stdout.strip().split("\n")
    return "\n".join(printed), int(peak)


STAGE_CODE = """
    import json, sys
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.sources.catalog import SourceEntry
    from medtrinity_tasks.run.pipeline import input_stage

    entry = SourceEntry.model_validate(json.loads(sys.argv[1]))
    stage = input_stage(entry, load_settings(), expert_follows=False)
    (row,) = stage([{"source_relpath": sys.argv[2], "label_relpath": None}])
    print(row["reject_reason"])
"""


def through_stage(entry: dict, root: Path, relpath: str) -> tuple[str, int]:
    """The reject reason the source's first stage gives ``relpath``, read in a child with the default limits."""
    return read_in_child(
        STAGE_CODE, json.dumps(dict(entry, location=str(root))), relpath, MEDTRINITY_DATA_DIR=str(root)
    )


# ---------------------------------------------------------------------------------------------------
# NIfTI


def test_a_gzip_nifti_claiming_a_huge_shape_is_rejected_by_its_header(tmp_path):
    nifti_claiming(tmp_path / "bomb.nii.gz", (20000, 20000, 2000))
    assert (tmp_path / "bomb.nii.gz").stat().st_size < 64 << 10
    reason, peak = through_stage(VOLUME_ENTRY, tmp_path, "bomb.nii.gz")
    assert reason == (
        "volume too large: claims 20000 x 20000 x 2000 voxels, more than the 536870912 allowed (MEDTRINITY_MAX_VOXELS)"
    )
    with pytest.raises(InputRejected) as rejected:  # rejected by its header: nothing is decoded
        read_nifti(tmp_path / "bomb.nii.gz")
    assert rejected.value.reason.kind == "volume too large"
    assert peak < PEAK_RSS_BOUND_KIB, peak


def test_nifti_channels_count_and_decoded_bytes_count(tmp_path):
    with pytest.raises(InputRejected, match=r"^volume too large: claims 600 x 600 x 600 x 4 voxels, more than the "):
        read_nifti(nifti_claiming(tmp_path / "4d.nii.gz", (600, 600, 600, 4)), channels=True)
    wide = nifti_claiming(tmp_path / "wide.nii.gz", (1024, 1024, 400), np.float64)
    with pytest.raises(InputRejected) as rejected:
        read_nifti(wide)
    assert str(rejected.value) == (
        "volume too large: claims 1024 x 1024 x 400 voxels of 8 bytes (4.7 GiB decoded), "
        "more than the 4096 MiB allowed (MEDTRINITY_MAX_DECODED_MB)"
    )
    scaled = nifti_claiming(tmp_path / "scaled.nii.gz", (1024, 1024, 400), np.int16, scl_slope=2.0, scl_inter=0.0)
    with pytest.raises(InputRejected, match=r"voxels of 2 bytes \(4\.7 GiB decoded\)"):  # read as float64
        read_nifti(scaled)
    small = InputLimits(max_voxels=63)
    with pytest.raises(InputRejected, match="more than the 63 allowed"):
        read_nifti(nifti_claiming(tmp_path / "cube.nii.gz", (4, 4, 4), data_bytes=128), limits=small)


def test_nifti_headers_claiming_less_or_more_than_the_file_holds(tmp_path):
    longer = nifti_claiming(tmp_path / "longer.nii.gz", (4, 4, 4), data_bytes=64 * 2 * 10)
    assert read_nifti(longer).data.shape == (4, 4, 4)
    for name in ("short.nii.gz", "short.nii"):
        header = nib.Nifti1Header()
        header.set_data_shape((64, 64, 64))
        header.set_data_dtype(np.int16)
        header.set_data_offset(352)
        data = header.binaryblock + bytes(4) + bytes(1000)
        (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        with pytest.raises(InputRejected, match=r"^not a readable NIfTI file \(OSError: Expected 524288 bytes"):
            read_nifti(tmp_path / name)


def test_nifti_extensions_are_bounded_before_nibabel_reads_them(tmp_path):
    huge = nifti_with_extension(tmp_path / "huge.nii.gz", vox_offset=368, esize=2**31 - 16, content_bytes=1 << 20)
    with pytest.raises(InputRejected, match="^malformed NIfTI extensions: one claims 2147483632 bytes, 16 remain"):
        read_nifti(huge)
    no_room = nifti_with_extension(tmp_path / "no_room.nii.gz", vox_offset=0, esize=1 << 20, content_bytes=1 << 20)
    with pytest.raises(InputRejected, match="flagged, but vox_offset 0 leaves no room"):
        read_nifti(no_room)
    far = nifti_with_extension(tmp_path / "far.nii.gz", vox_offset=2**33, esize=32, content_bytes=32)
    with pytest.raises(InputRejected, match=r"^NIfTI header too large: vox_offset 8589934592 puts 8\.0 GiB between"):
        read_nifti(far)
    image = nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment " * 20))
    nib.save(image, tmp_path / "commented.nii.gz")
    assert read_nifti(tmp_path / "commented.nii.gz").data.shape == (4, 4, 4)


# ---------------------------------------------------------------------------------------------------
# 2D images


def test_a_png_bomb_is_rejected_by_its_size(tmp_path):
    (tmp_path / "images").mkdir()
    png_of_zeros(tmp_path / "images" / "bomb.png", 30000, 30000)
    assert (tmp_path / "images" / "bomb.png").stat().st_size < 2 << 20
    reason, peak = through_stage(IMAGE_ENTRY, tmp_path, "images/bomb.png")
    assert reason == (
        "image too large: claims 30000 x 30000 pixels, more than the 100000000 allowed (MEDTRINITY_MAX_IMAGE_PIXELS)"
    )
    assert peak < PEAK_RSS_BOUND_KIB, peak


def test_a_png_over_the_limit_but_under_pillows_refusal_is_rejected(tmp_path):
    """12000 x 12000 RGB: Pillow's own check only warns (below twice its 89 million pixels) and would decode 0.5 GiB."""
    (tmp_path / "images").mkdir()
    png_of_zeros(tmp_path / "images" / "wide.png", 12000, 12000, colour_type=2)
    reason, peak = through_stage(IMAGE_ENTRY, tmp_path, "images/wide.png")
    assert reason.startswith("image too large: claims 12000 x 12000 pixels, more than the 100000000 allowed")
    assert peak < PEAK_RSS_BOUND_KIB, peak


def test_pillows_bomb_check_follows_the_setting_and_never_warns(tmp_path):
    limits = InputLimits(max_image_pixels=1000)
    default = Image.MAX_IMAGE_PIXELS
    for side in (30, 40, 100):
        png_of_zeros(tmp_path / f"{side}.png", side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "30.png", limits).shape == (30, 30)
        for side in (40, 100):  # Pillow alone warns at 40 x 40 and refuses, without the numbers, at 100 x 100
            with pytest.raises(InputRejected) as rejected:
                read_image(tmp_path / f"{side}.png", limits)
            assert str(rejected.value).startswith(f"image too large: claims {side} x {side} pixels, more than the 1000")
    assert Image.MAX_IMAGE_PIXELS == default


def test_png_text_chunks_are_bounded_by_pillow(tmp_path):
    """A zTXt chunk inflating to 256 MiB: Pillow stops at PngImagePlugin.MAX_TEXT_CHUNK (1 MiB) and refuses the file."""
    text = png_chunk(b"zTXt", b"Comment\0\0" + zlib_zeros(256 << 20))
    png_of_zeros(tmp_path / "text.png", 8, 8, text=text)
    with pytest.raises(InputRejected, match=r"^not a readable image \(ValueError: Decompressed data too large"):
        read_image(tmp_path / "text.png")


# ---------------------------------------------------------------------------------------------------
# DICOM

DICOM_CODE = """
    import sys
    from pathlib import Path
    from medtrinity_tasks.config import load_settings
    from medtrinity_tasks.errors import InputRejected
    from medtrinity_tasks.sources.readers.dicom.image import read_dicom_image
    from medtrinity_tasks.sources.readers.dicom.series import read_series, scan
    from medtrinity_tasks.sources.readers.limits import InputLimits

    limits = InputLimits.of(load_settings())
    path = Path(sys.argv[1])
    series, rejects = scan([path], limits)
    print(rejects[path].text if path in rejects else "listed")
    for read in ([lambda: read_series(series[0], limits)] if series else []) + [lambda: read_dicom_image(path, limits)]:
        try:
            read()
        except InputRejected as reject:
            print(reject)
"""


def test_a_dicom_claiming_a_huge_image_is_rejected_before_decoding(tmp_path):
    path = dicom_claiming(tmp_path / "claims.dcm", 65535, 65535)
    assert path.stat().st_size < 16 << 10
    output, peak = read_in_child(DICOM_CODE, str(path))
    listed, as_series, as_image = output.splitlines()
    assert listed == "listed"  # the listing reads headers only
    assert as_series == (
        "volume too large: claims 65535 x 65535 x 1 voxels, more than the 536870912 allowed (MEDTRINITY_MAX_VOXELS)"
    )
    assert as_image == (
        "image too large: claims 65535 x 65535 pixels, more than the 100000000 allowed (MEDTRINITY_MAX_IMAGE_PIXELS)"
    )
    assert peak < PEAK_RSS_BOUND_KIB, peak


def test_a_series_is_checked_on_the_sum_of_its_files(tmp_path):
    datasets = fx.ct_datasets("axial")[:4]
    (series,), _ = scan(fx.save(datasets, tmp_path))
    rows, columns = datasets[0].Rows, datasets[0].Columns
    assert read_series(series, InputLimits(max_voxels=4 * rows * columns)).data.shape == (40, 32, 4)
    with pytest.raises(InputRejected) as rejected:
        read_series(series, InputLimits(max_voxels=3 * rows * columns))
    assert str(rejected.value) == (
        f"volume too large: claims {columns} x {rows} x 4 voxels, more than the {3 * rows * columns} allowed "
        "(MEDTRINITY_MAX_VOXELS)"
    )
    with pytest.raises(InputRejected) as rejected:  # 2 bytes stored and a float32 volume with its RAS+ copy
        read_series(series, InputLimits(max_decoded_mb=0))
    decoded = f"{rows * columns * 8 / 1024:.1f} KiB"
    assert str(rejected.value).startswith(
        f"volume too large: claims {columns} x {rows} x 1 voxels of 2 bytes ({decoded} decoded)"
    )


def test_a_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(tmp_path):
    """1 GiB of deflated zeros (1 MiB on disk) against a 64 MiB limit: counting to the 4096 MiB default takes
    seconds per file, so the limit is lowered here; the reader counts in 1 MiB steps whatever the limit."""
    path = deflated_dicom(tmp_path / "deflated.dcm", 1 << 30)
    assert path.stat().st_size < 2 << 20
    output, peak = read_in_child(DICOM_CODE, str(path), MEDTRINITY_MAX_DECODED_MB="64")
    reason = (
        "deflated DICOM too large: deflated.dcm inflates to more than the 64 MiB allowed (MEDTRINITY_MAX_DECODED_MB)"
    )
    assert output.splitlines() == [reason, reason]
    assert peak < PEAK_RSS_BOUND_KIB, peak


def test_a_deflated_series_within_the_limit_reads(tmp_path):
    datasets = fx.ct_datasets("axial")[:3]
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    paths = fx.save(datasets, tmp_path)
    assert pydicom.dcmread(paths[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        DeflatedExplicitVRLittleEndian
    )
    (series,), rejects = scan(paths)
    assert rejects == {} and read_series(series).data.shape == (40, 32, 3)
    with pytest.raises(InputRejected, match="^deflated DICOM too large: img_"):
        read_dicom_image(paths[0], InputLimits(max_decoded_mb=0))


# ---------------------------------------------------------------------------------------------------
# reasons stay short


def _stage(stage_class, entry: dict, root: Path):
    settings = load_settings({"MEDTRINITY_DATA_DIR": str(root)})
    stage = input_stage(SourceEntry.model_validate(dict(entry, location=str(root))), settings, expert_follows=False)
    assert type(stage) is stage_class
    return stage


def test_a_label_map_with_thousands_of_labels_gives_a_short_reason(tmp_path):
    image = nib.Nifti1Image(np.zeros((40, 40, 10), np.int16), np.eye(4))
    nib.save(image, tmp_path / "image.nii.gz")
    labels = (np.arange(40 * 40 * 10, dtype=np.int32) % 10000 + 1).reshape(40, 40, 10)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "labels.nii.gz")
    labels[0, 0, 0] = 2**31 - 1  # one stray large value: counted without a counter per value up to it
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "stray.nii.gz")
    slicer = _stage(VolumeSlicer, VOLUME_ENTRY, tmp_path)
    rows = slicer(
        [{"source_relpath": "image.nii.gz", "label_relpath": name} for name in ("labels.nii.gz", "stray.nii.gz")]
    )
    reasons = [row["reject_reason"] for row in rows]
    assert reasons == [
        "label map holds values the catalog entry does not define: 3, 4, 5, 6, 7, 8, 9, 10 and 9990 more",
        "label map holds values the catalog entry does not define: 3, 4, 5, 6, 7, 8, 9, 10 and 9991 more",
    ]
    assert rows[0]["reject_kind"] == "label map holds values the catalog entry does not define"

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((50, 100), np.uint8)).save(tmp_path / "images" / "tile.png")
    Image.fromarray((np.arange(5000, dtype=np.uint16) + 1).reshape(50, 100)).save(tmp_path / "masks" / "tile.png")
    (row,) = _stage(PlanarImageLoader, IMAGE_ENTRY, tmp_path)(
        [{"source_relpath": "images/tile.png", "label_relpath": "masks/tile.png"}]
    )
    assert (
        row["reject_reason"]
        == "mask holds values the catalog entry does not define: 2, 3, 4, 5, 6, 7, 8, 9 and 4991 more"
    )


def test_reasons_quote_at_most_80_characters_of_source_text(tmp_path):
    name = "scan_" + "x" * 200 + ".nii.gz"
    with pytest.raises(InputRejected) as rejected:
        read_nifti(tmp_path / name)
    assert str(rejected.value) == f"file is missing: {name[:77]}..."
    detail = error_detail(
        ValueError(f"bad value {'y' * 300} in {tmp_path / 'long_name.dcm'}"), tmp_path / "long_name.dcm"
    )
    assert len(detail) < 100 and "long_name.dcm" not in detail  # cut before the name; never through it
    detail = error_detail(ValueError(f"{tmp_path / 'long_name.dcm'}: {'y' * 300}"), tmp_path / "long_name.dcm")
    assert detail.startswith("ValueError: long_name.dcm: yyy") and detail.endswith("...") and len(detail) < 110
