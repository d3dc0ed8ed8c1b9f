"""The DICOM reader: series to RAS+ volumes (any orientation, compressed, multi-frame, MONOCHROME1),
SEG and RTSTRUCT to aligned label volumes, every unusable file rejected with its reason, and no PHI
out of the module. Fixtures are written in tmp dirs by ``tests/dicom_fixtures.py``."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.encaps import encapsulate
from pydicom.tag import Tag
from pydicom.uid import (
    MPEG2MPML,
    UID,
    BasicTextSRStorage,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    RTPlanStorage,
)

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.sources.readers.dicom.annotations import read_rtstruct_labels, read_seg_labels
from medtrinity_tasks.sources.readers.dicom.header import ALLOWED_ATTRIBUTES, LABEL_MAP_SEG_STORAGE, read_dataset
from medtrinity_tasks.sources.readers.dicom.series import DicomSeries, read_series, scan
from tests.support import dicom_fixtures as fx

EXPECTED = fx.ras(fx.phantom()).astype(np.float32)
CUBE_RAS = (  # the cube's RAS+ voxel ranges, inclusive: x and y reversed from the LPS grid
    (fx.SHAPE[0] - 1 - 9, fx.SHAPE[0] - 1 - 5),
    (fx.SHAPE[1] - 1 - 6, fx.SHAPE[1] - 1 - 3),
    (4, 7),
)
RING_OUTER = (slice(20, 30), slice(18, 28), slice(2, 4))
RING_HOLE = (slice(23, 26), slice(21, 24), slice(2, 4))


def write_series(directory: Path, datasets) -> DicomSeries:
    paths = fx.save(datasets, directory)
    random.Random(11).shuffle(paths)
    series, rejects = scan(paths)
    assert rejects == {} and len(series) == 1
    return series[0]


@pytest.fixture(scope="module")
def axial(tmp_path_factory):
    """(series, volume, datasets) of the axial phantom."""
    datasets = fx.ct_datasets("axial")
    series = write_series(tmp_path_factory.mktemp("axial"), datasets)
    return series, read_series(series), datasets


# ---------------------------------------------------------------------------------------------------
# geometry and pixels


def test_axial_series_reads_to_ras_with_rescale_and_spacing(axial):
    series, volume, _ = axial
    assert series.modality == "CT" and series.body_part == "ABDOMEN" and len(series.files) == fx.SHAPE[2]
    z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in series.files]
    assert z == sorted(z)  # files sorted along the normal although names and input order were shuffled

    assert volume.data.dtype == np.float32 and volume.data.shape == fx.SHAPE
    assert volume.spacing_mm == pytest.approx(fx.SPACING)
    assert volume.original_orientation == "LPS"
    np.testing.assert_allclose(volume.affine, fx.ras_affine(), atol=1e-6)
    np.testing.assert_array_equal(volume.data, EXPECTED)  # stored + 1024, intercept -1024 applied
    assert volume.data.min() == -500

    bright = np.argwhere(volume.data == fx.CUBE_HU)
    assert [(int(bright[:, a].min()), int(bright[:, a].max())) for a in range(3)] == list(CUBE_RAS)
    centre = np.array([*(np.mean(r) for r in CUBE_RAS), 1.0])
    expected_mm = [  # the cube centre in patient LPS mm, as RAS
        -(fx.ORIGIN[0] + 7 * fx.SPACING[0]),
        -(fx.ORIGIN[1] + 4.5 * fx.SPACING[1]),
        fx.ORIGIN[2] + 5.5 * fx.SPACING[2],
    ]
    np.testing.assert_allclose((volume.affine @ centre)[:3], expected_mm, atol=1e-6)


@pytest.mark.parametrize("orientation, codes", [("sagittal", "PIR"), ("coronal", "LIP")])
def test_non_axial_series_lands_on_the_same_ras_voxels(orientation, codes, axial, tmp_path):
    series = write_series(tmp_path, fx.ct_datasets(orientation))
    volume = read_series(series)
    assert volume.original_orientation == codes
    np.testing.assert_array_equal(volume.data, axial[1].data)
    np.testing.assert_allclose(volume.affine, axial[1].affine, atol=1e-6)
    assert volume.spacing_mm == pytest.approx(axial[1].spacing_mm)


def test_monochrome1_is_inverted(tmp_path):
    series = write_series(tmp_path, fx.ct_datasets("axial", photometric="MONOCHROME1"))
    assert pydicom.dcmread(series.files[0]).PhotometricInterpretation == "MONOCHROME1"
    np.testing.assert_array_equal(read_series(series).data, EXPECTED)


def test_multiframe_enhanced_image(axial, tmp_path):
    image = fx.multiframe(axial[2])
    path = tmp_path / "enhanced.dcm"
    image.save_as(path)
    stored = [float(g.PlanePositionSequence[0].ImagePositionPatient[2]) for g in image.PerFrameFunctionalGroupsSequence]
    assert stored != sorted(stored)  # frames not stored inferior to superior: the reader sorts them

    (series,), rejects = scan([path])
    assert rejects == {} and series.files == (path,)
    volume = read_series(series)
    np.testing.assert_array_equal(volume.data, EXPECTED)
    np.testing.assert_allclose(volume.affine, fx.ras_affine(), atol=1e-6)
    assert volume.spacing_mm == pytest.approx(fx.SPACING)


def _encoder_missing(syntax: UID) -> str | None:
    """Why the fixture cannot encode ``syntax`` here, or None when it can."""
    if syntax in (JPEGLossless, JPEGLosslessSV1):
        return None  # pydicom has no encoder: the fixture writes lossless JPEG itself
    from pydicom.pixels import get_encoder

    try:
        encoder = get_encoder(syntax)
    except NotImplementedError:
        return f"pydicom has no encoder for {syntax.name}"
    if not encoder.is_available:
        return f"no encoder plugin for {syntax.name}: {'; '.join(encoder.missing_dependencies)}"
    return None


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, JPEGLossless],
    ids=["rle", "jpeg-ls-lossless", "jpeg2000-lossless", "jpeg-lossless-sv1", "jpeg-lossless-process14"],
)
def test_compressed_series_decode_to_the_uncompressed_data(syntax, axial, tmp_path):
    missing = _encoder_missing(syntax)
    if missing:
        pytest.skip(missing)
    series = write_series(tmp_path, fx.compress(axial[2], syntax))
    assert pydicom.dcmread(series.files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    volume = read_series(series)
    np.testing.assert_array_equal(volume.data, axial[1].data)
    np.testing.assert_allclose(volume.affine, axial[1].affine)


def test_jpeg_baseline_is_decoded(axial, tmp_path):
    datasets, grid8 = fx.jpeg_baseline(axial[2])  # lossy 8-bit, encoded by Pillow
    volume = read_series(write_series(tmp_path, datasets))
    assert np.abs(volume.data - fx.ras(grid8)).max() <= 2


# ---------------------------------------------------------------------------------------------------
# annotations


@pytest.mark.parametrize("orientation", ["axial", "sagittal"])
def test_seg_binary_and_fractional_align_with_the_volume(orientation, tmp_path):
    datasets = fx.ct_datasets(orientation)
    series = write_series(tmp_path / "image", datasets)
    grid = fx.box_mask(fx.CUBE, fx.BLOCK)  # segment 1: the cube, segment 2: a block
    shuffled = list(datasets)
    random.Random(5).shuffle(shuffled)
    fx.seg(shuffled, orientation, grid).save_as(binary := tmp_path / "seg.dcm")
    probability = np.where(grid == 1, 1.0, np.where(grid == 2, 0.3, 0.0)).astype(np.float32)
    fx.seg(datasets, orientation, grid, fractional=probability).save_as(fractional := tmp_path / "fractional.dcm")

    (series,), rejects = scan([*series.files, binary, fractional])
    assert rejects == {} and set(series.segs) == {binary, fractional}
    volume = read_series(series)

    labels = read_seg_labels(binary, series, volume)
    assert labels.shape == volume.data.shape and np.issubdtype(labels.dtype, np.unsignedinteger)
    np.testing.assert_array_equal(labels, fx.ras(grid))
    assert (volume.data[labels == 1] == fx.CUBE_HU).all()
    np.testing.assert_array_equal(read_seg_labels(binary, series, volume, {2: 7}), fx.ras(np.where(grid == 2, 7, 0)))
    # fractional: the cube (1.0) counts, the block (0.3) is below half of MaximumFractionalValue
    np.testing.assert_array_equal(read_seg_labels(fractional, series, volume), fx.ras((grid == 1).astype(np.uint8)))


def test_labelmap_seg(tmp_path):
    datasets = fx.ct_datasets("coronal")
    series = write_series(tmp_path / "image", datasets)
    grid = fx.box_mask(fx.CUBE, fx.BLOCK)
    seg = fx.seg(datasets, "coronal", grid, labelmap=True)
    assert seg.SOPClassUID == LABEL_MAP_SEG_STORAGE and seg.SegmentationType == "LABELMAP"
    seg.save_as(path := tmp_path / "labelmap.dcm")
    (series,), rejects = scan([*series.files, path])
    assert rejects == {} and series.segs == (path,)
    volume = read_series(series)
    np.testing.assert_array_equal(read_seg_labels(path, series, volume), fx.ras(grid))
    np.testing.assert_array_equal(read_seg_labels(path, series, volume, {1: 4}), fx.ras(np.where(grid == 1, 4, 0)))


def test_seg_frames_without_plane_positions_follow_their_source_images(axial, tmp_path):
    series, volume, datasets = axial
    grid = fx.box_mask(fx.CUBE, fx.BLOCK)
    seg = fx.seg(datasets, "axial", grid)
    for group in seg.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence  # only DerivationImageSequence > ReferencedSOPInstanceUID is left
    seg.save_as(path := tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg_labels(path, series, volume), fx.ras(grid))


@pytest.mark.parametrize("orientation", ["axial", "sagittal"])
def test_rtstruct_contours_fill_the_right_slices(orientation, tmp_path):
    datasets = fx.ct_datasets(orientation)
    series = write_series(tmp_path / "image", datasets)
    rois = [(1, "cube", [fx.CUBE]), (2, "ring", [RING_OUTER, RING_HOLE])]
    fx.rtstruct(datasets, rois).save_as(path := tmp_path / "rt.dcm", enforce_file_format=True)
    (series,), rejects = scan([*series.files, path])
    assert rejects == {} and series.rtstructs == (path,)
    volume = read_series(series)

    expected = fx.box_mask(fx.CUBE, RING_OUTER)
    expected[RING_HOLE] = 0  # the inner contour is a hole (even-odd rule)
    labels = read_rtstruct_labels(path, series, volume)
    np.testing.assert_array_equal(labels, fx.ras(expected))
    assert (volume.data[labels == 1] == fx.CUBE_HU).all()
    mapped = read_rtstruct_labels(path, series, volume, {"ring": 5})
    np.testing.assert_array_equal(mapped, fx.ras(np.where(expected == 2, 5, 0)))


def test_rtstruct_contours_without_image_references_go_by_their_plane(axial, tmp_path):
    series, volume, datasets = axial
    rt = fx.rtstruct(datasets, [(3, "cube", [fx.CUBE])])
    for contour in rt.ROIContourSequence[0].ContourSequence:
        del contour.ContourImageSequence
    rt.save_as(path := tmp_path / "rt.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_rtstruct_labels(path, series, volume), fx.ras(fx.box_mask(fx.CUBE, values=(3,))))


# ---------------------------------------------------------------------------------------------------
# rejects


def _bad_files(root: Path) -> dict[Path, str]:
    """Files that ``scan`` must reject, with the start of their reason."""
    root.mkdir(parents=True, exist_ok=True)
    bad = {}
    (path := root / "empty.dcm").write_bytes(b"")
    bad[path] = "zero-byte file"
    (path := root / "notes.dcm").write_text("Patient Doe^Jane PHI-12345 ACC-999\n" * 20)
    bad[path] = "not a DICOM file"
    fx.non_image(RTPlanStorage, "RTPLAN").save_as(path := root / "plan.dcm", enforce_file_format=True)
    bad[path] = "not an image: RT Plan Storage"
    fx.non_image(BasicTextSRStorage, "SR").save_as(path := root / "report.dcm", enforce_file_format=True)
    bad[path] = "not an image: Basic Text SR Storage"
    bad[fx.without_file_meta(fx.ct_datasets("axial")[0], root / "raw.dcm")] = "DICOM dataset without file meta"
    burned = fx.ct_datasets("axial")[0]
    burned.BurnedInAnnotation = "YES"
    (path,) = fx.save([burned], root / "burned")
    bad[path] = "image flagged with burned-in annotation"
    elsewhere = fx.ct_datasets("axial")  # a SEG whose series is not handed to scan
    fx.seg(elsewhere, "axial", fx.box_mask(fx.CUBE)).save_as(path := root / "orphan_seg.dcm")
    bad[path] = "SEG references a series that is not in the source"
    fx.rtstruct(elsewhere, [(1, "cube", [fx.CUBE])]).save_as(path := root / "orphan_rt.dcm", enforce_file_format=True)
    bad[path] = "RTSTRUCT references a series that is not in the source"
    return bad


def test_scan_rejects_unusable_files_with_their_reasons(axial, tmp_path):
    bad = _bad_files(tmp_path)
    series, rejects = scan([*bad, *axial[0].files])
    assert [s.series_uid for s in series] == [axial[0].series_uid] and series[0].files == axial[0].files
    assert set(rejects) == set(bad)
    for path, reason in bad.items():
        assert rejects[path].text.startswith(reason), (path.name, rejects[path])


def _truncated(datasets):
    datasets[1].PixelData = datasets[1].PixelData[:-300]
    return datasets


def _mixed_sizes(datasets):
    datasets[3].Rows = 8
    datasets[3].PixelData = datasets[3].PixelData[: 8 * datasets[3].Columns * 2]
    return datasets


def _set(index, **values):
    def change(datasets):
        for keyword, value in values.items():
            if value is None:
                delattr(datasets[index], keyword)
            else:
                setattr(datasets[index], keyword, value)
        return datasets

    return change


def _raw(index, tag, vr, value: bytes):
    """Store a value as raw bytes, as a broken writer would (pydicom refuses to set it as a value)."""

    def change(datasets):
        datasets[index]._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
        return datasets

    return change


def _corrupt_jpeg_ls(datasets):
    datasets = fx.compress(datasets, JPEGLSLossless)
    datasets[1].PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(50)])
    return datasets


def _mpeg2(datasets):
    datasets = fx.compress(datasets, RLELossless)
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = MPEG2MPML
    return datasets


BROKEN_SERIES = {
    "truncated": (_truncated, "truncated pixel data in "),
    "missing slice": (lambda datasets: datasets[:2] + datasets[3:], "slice positions are unevenly spaced"),
    "duplicate position": (_set(2, ImagePositionPatient=[-10.0, -20.0, 30.0]), "duplicate slice positions"),
    "corrupt JPEG-LS": (_corrupt_jpeg_ls, "cannot decode transfer syntax JPEG-LS Lossless Image Compression: "),
    "MPEG2": (_mpeg2, "cannot decode transfer syntax MPEG2 Main Profile / Main Level: "),
}


@pytest.mark.parametrize("case", list(BROKEN_SERIES))
def test_broken_series_are_rejected_with_their_reason(case, tmp_path):
    change, reason = BROKEN_SERIES[case]
    paths = fx.save(change(fx.ct_datasets("axial")[:4]), tmp_path)
    (series,), rejects = scan(paths)
    assert rejects == {}
    with pytest.raises(InputRejected) as rejected:
        read_series(series)
    assert str(rejected.value).startswith(reason), str(rejected.value)
    assert "\n" not in str(rejected.value)


SPLIT_SERIES = {  # files of one series that do not stack with the others: their own inputs, as sites export them
    "mixed sizes": (_mixed_sizes, [(False, 3), (False, 1)]),
    "mixed orientations": (_set(3, ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6]), [(False, 3), (False, 1)]),
    "no position": (_set(3, ImagePositionPatient=None), [(False, 3), (True, 1)]),
    "no orientation": (_set(0, ImageOrientationPatient=None), [(True, 1), (False, 3)]),
    "short position": (_set(3, ImagePositionPatient=[0.0, 1.0]), [(False, 3), (True, 1)]),
    "malformed frame count": (_raw(3, 0x00280008, "IS", b"x "), [(False, 3), (True, 1)]),
    "repeated acquisition": (lambda datasets: datasets[:2] + [fx.renewed(d) for d in datasets[:2]], [(False, 2)] * 2),
}


@pytest.mark.parametrize("case", list(SPLIT_SERIES))
def test_files_of_a_series_that_do_not_stack_become_inputs_of_their_own(case, tmp_path):
    change, expected = SPLIT_SERIES[case]
    paths = fx.save(change(fx.ct_datasets("axial")[:4]), tmp_path)
    found, rejects = scan(paths)
    assert rejects == {}
    assert sorted((s.planar, len(s.files)) for s in found) == sorted(expected)
    stacks = [s.key for s in found if not s.planar]
    assert len(set(stacks)) == len(stacks)  # each stack has a pseudonym of its own
    for stack in (s for s in found if not s.planar):
        assert read_series(stack).data.shape[2] == len(stack.files)


def test_a_file_repeating_another_instance_is_rejected_as_a_duplicate(tmp_path):
    datasets = fx.ct_datasets("axial")[:3]
    paths = fx.save(datasets, tmp_path / "a") + fx.save(datasets[:1], tmp_path / "b")
    (series,), rejects = scan(paths)
    assert len(series.files) == 3
    ((path, reason),) = rejects.items()
    assert path.parent.name == "b" and reason.kind == "duplicate instance"


def test_no_phi_leaves_the_reader(axial, tmp_path):
    assert not {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"} & set(
        ALLOWED_ATTRIBUTES
    )
    series, volume, datasets = axial
    assert "PatientName" not in read_dataset(series.files[0], pixels=True)  # specific_tags: never parsed

    seen: list[str] = []
    fx.seg(datasets, "axial", fx.box_mask(fx.CUBE)).save_as(seg := tmp_path / "seg.dcm")
    fx.rtstruct(datasets, [(1, "cube", [fx.CUBE])]).save_as(rt := tmp_path / "rt.dcm", enforce_file_format=True)
    image = fx.multiframe(datasets)
    image.save_as(enhanced := tmp_path / "enhanced.dcm")
    bad = _bad_files(tmp_path / "bad")
    found, rejects = scan([*series.files, seg, rt, enhanced, *bad])
    seen += [repr(found), repr(rejects), *(reason.text for reason in rejects.values())]
    for each in found:
        read = read_series(each)
        seen += [repr(read), read.original_orientation, repr(read.spacing_mm)]
        seen += [repr(read_seg_labels(p, each, read)) for p in each.segs]
        seen += [repr(read_rtstruct_labels(p, each, read)) for p in each.rtstructs]
    for case, (change, _) in BROKEN_SERIES.items():
        (broken,), _ = scan(fx.save(change(fx.ct_datasets("axial")[:4]), tmp_path / case))
        with pytest.raises(InputRejected) as rejected:
            read_series(broken)
        seen.append(str(rejected.value))
    assert len(found) == 2 and seg in found[0].segs + found[1].segs
    text = "\n".join(seen)
    for phi in fx.PHI_STRINGS:
        assert phi not in text, phi


def test_importing_the_reader_loads_no_heavy_library():
    code = (
        "import sys, medtrinity_tasks.sources.readers.dicom.inputs; "
        "print(sorted(m for m in ('pydicom', 'nibabel', 'PIL', 'highdicom') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
