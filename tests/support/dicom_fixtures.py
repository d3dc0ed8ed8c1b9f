"""DICOM fixtures written with pydicom and highdicom: a small CT phantom as axial, sagittal or coronal
series (optionally compressed, MONOCHROME1 or multi-frame), SEG and RTSTRUCT on it, and broken or
non-image files. Every file carries the same fake PHI, which the reader must never let out.

The phantom is an integer HU array ``PHANTOM[a, b, c]`` on an LPS grid: ``a`` toward the patient's
left, ``b`` posterior, ``c`` superior, voxel (a, b, c) at ``ORIGIN + (a, b, c) * SPACING`` mm. Its
RAS+ view is ``PHANTOM[::-1, ::-1, :]``, whatever orientation the series was written in."""

from __future__ import annotations

import io
import random
import warnings
from copy import deepcopy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    RTStructureSetStorage,
    generate_uid,
)

from medtrinity_tasks.sources.samples.dicom import ACQUISITION_AXES, DICOM_ACQUISITIONS, acquired_frames

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PHI-12345",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-999",
    "InstitutionName": "General Hospital",
}
PHI_STRINGS = ("Doe^Jane", "Doe", "Jane", "PHI-12345", "19700101", "ACC-999", "General Hospital")

SHAPE = (40, 32, 12)  # along L, P, S (axial slices of at least 32 x 32: the JPEG 2000 encoder needs them)
SPACING = (0.8, 0.9, 2.5)  # mm along L, P, S: all different, so that swapped axes show
ORIGIN = np.array([-10.0, -20.0, 30.0])  # LPS mm of voxel (0, 0, 0)
CUBE = (slice(5, 10), slice(3, 7), slice(4, 8))  # the bright cube, LPS grid indices
CUBE_HU = 1000
BLOCK = (slice(12, 15), slice(10, 13), slice(1, 3))  # a second structure for the annotations
INTERCEPT = -1024

ORIENTATIONS = DICOM_ACQUISITIONS  # ImageOrientationPatient (row cosines, column cosines) by name


def phantom() -> np.ndarray:
    """HU on the LPS grid: a ramp that differs along every axis, plus the bright cube."""
    a, b, c = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    hu = (-500 + 3 * a + 7 * b + 11 * c).astype(np.int16)
    hu[CUBE] = CUBE_HU
    return hu


def ras(grid: np.ndarray) -> np.ndarray:
    """An LPS-grid array as the reader must return it (RAS+)."""
    return grid[::-1, ::-1, :]


def ras_affine() -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-(ORIGIN[0] + (SHAPE[0] - 1) * SPACING[0]), -(ORIGIN[1] + (SHAPE[1] - 1) * SPACING[1]), ORIGIN[2]]
    return affine


def box_mask(*boxes: tuple[slice, slice, slice], values: tuple[int, ...] | None = None) -> np.ndarray:
    grid = np.zeros(SHAPE, dtype=np.uint8)
    for index, box in enumerate(boxes):
        grid[box] = values[index] if values else index + 1
    return grid


def slices_of(grid: np.ndarray, orientation: str) -> list[tuple[np.ndarray, tuple[float, float, float], list]]:
    """The grid cut as a series in ``orientation``: per slice, (frame [row, column], IPP, PixelSpacing)."""
    row_axis, column_axis, _ = ACQUISITION_AXES[orientation]
    return [
        (
            frame,
            tuple(float(ORIGIN[a] + index[a] * SPACING[a]) for a in range(3)),
            [SPACING[row_axis], SPACING[column_axis]],
        )
        for frame, index in acquired_frames(grid, orientation)
    ]


def _file_meta(sop_class: str, sop_uid: str, syntax: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    return meta


def _common(ds: Dataset, sop_class: str, modality: str, study_uid: str, series_uid: str) -> Dataset:
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = modality
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "120000", "1"
    ds.SeriesDate, ds.SeriesTime = "20240101", "120000"
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.Manufacturer = "Phantom Inc"
    ds.SeriesNumber = 1
    return ds


def ct_datasets(
    orientation: str = "axial",
    *,
    photometric: str = "MONOCHROME2",
    grid: np.ndarray | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference: str | None = None,
) -> list[Dataset]:
    """One CT slice dataset per slice of the phantom, stored as uint16 12-bit with intercept -1024."""
    grid = phantom() if grid is None else grid
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference = frame_of_reference or generate_uid()
    datasets = []
    for index, (frame, position, pixel_spacing) in enumerate(slices_of(grid, orientation)):
        stored = frame.astype(np.int32) - INTERCEPT
        if photometric == "MONOCHROME1":
            stored = 4095 - stored
        ds = Dataset()
        ds.file_meta = _file_meta(CTImageStorage, generate_uid())
        _common(ds, CTImageStorage, "CT", study_uid, series_uid)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "ABDOMEN"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = list(ORIENTATIONS[orientation])
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
        ds.SliceThickness = 2.5
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.Rows, ds.Columns = frame.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, INTERCEPT, "HU"
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()
        datasets.append(ds)
    return datasets


def save(datasets: list[Dataset], directory: Path, *, stem: str = "img", shuffle: bool = True) -> list[Path]:
    """Write datasets under shuffled file names (path order is not slice order); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(range(len(datasets)))
    if shuffle:
        random.Random(7).shuffle(names)
    paths = []
    for name, ds in zip(names, datasets, strict=True):
        path = directory / f"{stem}_{name:03d}.dcm"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some tests write malformed values on purpose
            ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def renewed(ds: Dataset) -> Dataset:
    """A copy of an image as another instance (a repeated acquisition at the same position)."""
    copy = deepcopy(ds)
    copy.SOPInstanceUID = generate_uid()
    copy.file_meta = ds.file_meta.copy()
    copy.file_meta.MediaStorageSOPInstanceUID = copy.SOPInstanceUID
    return copy


def compress(datasets: list[Dataset], syntax: str) -> list[Dataset]:
    """Datasets re-encoded in ``syntax``: pydicom's encoders where they exist, else our own lossless JPEG."""
    from pydicom.encaps import encapsulate

    out = []
    for ds in datasets:
        ds = pydicom.dcmread(_round_trip(ds))
        if syntax in (JPEGLossless, JPEGLosslessSV1):
            ds.PixelData = encapsulate([jpeg_lossless(ds.pixel_array, precision=int(ds.BitsStored))])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax)
        out.append(ds)
    return out


def _round_trip(ds: Dataset) -> io.BytesIO:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    return buffer


def jpeg_lossless(frame: np.ndarray, precision: int) -> bytes:
    """A JPEG lossless (process 14, first-order prediction, selection value 1) codestream.

    pydicom has no encoder for this syntax, so the fixture writes one: predict each sample from its
    left neighbour (from the one above in the first column), Huffman-code the differences with one
    table of 17 five-bit codes (one per difference category), and stuff 0xFF bytes."""
    rows, columns = frame.shape
    x = frame.astype(np.int64)
    prediction = np.empty_like(x)
    prediction[0, 0] = 1 << (precision - 1)
    prediction[0, 1:] = x[0, :-1]
    prediction[1:, 0] = x[:-1, 0]
    prediction[1:, 1:] = x[1:, :-1]
    differences = (x - prediction) % 65536
    differences = np.where(differences >= 32768, differences - 65536, differences).ravel().tolist()
    bits: list[str] = []
    for diff in differences:
        category = 16 if diff == -32768 else abs(diff).bit_length()
        bits.append(format(category, "05b"))
        if 0 < category < 16:
            bits.append(format(diff if diff > 0 else diff + (1 << category) - 1, f"0{category}b"))
    stream = "".join(bits)
    stream += "1" * (-len(stream) % 8)
    data = bytearray()
    for i in range(0, len(stream), 8):
        byte = int(stream[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)
    huffman_bits = bytes([0, 0, 0, 0, 17] + [0] * 11)
    huffman_values = bytes(range(17))
    return b"".join(
        [
            b"\xff\xd8",  # SOI
            b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([precision]) + rows.to_bytes(2, "big"),
            columns.to_bytes(2, "big") + bytes([1, 1, 0x11, 0]),  # SOF3: one component
            b"\xff\xc4" + (3 + 16 + 17).to_bytes(2, "big") + b"\x00" + huffman_bits + huffman_values,  # DHT
            b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0]),  # SOS: predictor 1, Pt 0
            bytes(data),
            b"\xff\xd9",  # EOI
        ]
    )


def jpeg_baseline(datasets: list[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """8-bit copies of the slices encoded as JPEG baseline by Pillow (lossy); also the 8-bit grid."""
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    grid8 = ((phantom().astype(np.int32) - INTERCEPT) // 8).astype(np.uint8)
    out = []
    for ds in datasets:
        ds = pydicom.dcmread(_round_trip(ds))
        frame = ((ds.pixel_array.astype(np.int32)) // 8).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(frame, mode="L").save(buffer, format="JPEG", quality=100)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.RescaleIntercept = 0
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        out.append(ds)
    return out, grid8


def multiframe(datasets: list[Dataset]) -> Dataset:
    """The slices as one Legacy Converted Enhanced CT image (per-frame PlanePositionSequence)."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    shuffled = list(datasets)
    random.Random(3).shuffle(shuffled)
    image = LegacyConvertedEnhancedCTImage(
        shuffled,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    return image


def seg(
    datasets: list[Dataset],
    orientation: str,
    grid: np.ndarray,
    *,
    fractional: np.ndarray | None = None,
    labelmap: bool = False,
) -> Dataset:
    """A highdicom SEG on ``datasets``: ``grid`` holds segment numbers on the LPS grid (BINARY, or
    LABELMAP with ``labelmap``), or ``fractional`` holds one segment's probabilities (FRACTIONAL)."""
    from highdicom.seg import SegmentAlgorithmTypeValues, Segmentation, SegmentDescription
    from pydicom.sr.codedict import codes

    source = fractional if fractional is not None else grid
    frames = np.stack([frame for frame, _, _ in slices_of(source, orientation)])
    # match the order of ``datasets`` (shuffled in some tests) by their position along the normal
    positions = [tuple(float(v) for v in ds.ImagePositionPatient) for ds in datasets]
    expected = [tuple(float(v) for v in position) for _, position, _ in slices_of(source, orientation)]
    frames = frames[[expected.index(p) for p in positions]]
    count = 1 if fractional is not None else int(grid.max())
    descriptions = [
        SegmentDescription(
            segment_number=n,
            segment_label=f"structure {n}",
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in range(1, count + 1)
    ]
    return Segmentation(
        source_images=datasets,
        pixel_array=frames.astype(np.float32 if fractional is not None else np.uint8),
        segmentation_type="FRACTIONAL" if fractional is not None else "LABELMAP" if labelmap else "BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=50,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Phantom Inc",
        manufacturer_model_name="fixture",
        software_versions="1",
        device_serial_number="1",
    )


def rtstruct(datasets: list[Dataset], rois: list[tuple[int, str, list[tuple[slice, ...]]]]) -> Dataset:
    """An RTSTRUCT by hand: per ROI (number, name, boxes), each box on the LPS grid drawn as one closed
    rectangle per slice it crosses, through the centres of its edge voxels (a box inside another box
    of the same ROI is a hole)."""
    first = datasets[0]
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(RTStructureSetStorage, sop_uid)
    _common(ds, RTStructureSetStorage, "RTSTRUCT", first.StudyInstanceUID, generate_uid())
    ds.StructureSetLabel = "fixture"
    ds.StructureSetDate, ds.StructureSetTime = "20240101", "120000"
    contour_images = []
    for image in datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        contour_images.append(item)
    series_item = Dataset()
    series_item.SeriesInstanceUID = first.SeriesInstanceUID
    series_item.ContourImageSequence = contour_images
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study_item.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = [series_item]
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_item.RTReferencedStudySequence = [study_item]
    ds.ReferencedFrameOfReferenceSequence = [frame_item]
    ds.StructureSetROISequence = []
    ds.ROIContourSequence = []
    ds.RTROIObservationsSequence = []
    for number, name, boxes in rois:
        roi = Dataset()
        roi.ROINumber, roi.ROIName = number, name
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)
        contours = []
        for box in boxes:
            for image in datasets:
                contour = _rectangle(image, box)
                if contour is not None:
                    contours.append(contour)
        item = Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        item.ContourSequence = contours
        ds.ROIContourSequence.append(item)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return ds


def _rectangle(image: Dataset, box: tuple[slice, ...]) -> Dataset | None:
    """The box's outline on one slice, as a CLOSED_PLANAR contour in patient mm (or None)."""
    orientation = next(name for name, iop in ORIENTATIONS.items() if list(iop) == list(image.ImageOrientationPatient))
    grid = box_mask(box)
    position = [float(v) for v in image.ImagePositionPatient]
    frame = next(f for f, p, _ in slices_of(grid, orientation) if np.allclose(p, position))
    rows, columns = np.nonzero(frame)
    if rows.size == 0:
        return None
    iop = np.array([float(v) for v in image.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    corners = [
        (rows.min(), columns.min()),
        (rows.min(), columns.max()),
        (rows.max(), columns.max()),
        (rows.max(), columns.min()),
    ]
    points = [
        np.array(position) + c * column_spacing * iop[:3] + r * row_spacing * iop[3:] for r, c in corners
    ]  # patient LPS mm
    contour = Dataset()
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(points)
    contour.ContourData = [round(float(v), 4) for point in points for v in point]
    reference = Dataset()
    reference.ReferencedSOPClassUID = image.SOPClassUID
    reference.ReferencedSOPInstanceUID = image.SOPInstanceUID
    contour.ContourImageSequence = [reference]
    return contour


def non_image(sop_class: str, modality: str) -> Dataset:
    """A minimal non-image object (RT Plan, SR...) with PHI."""
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, generate_uid())
    _common(ds, sop_class, modality, generate_uid(), generate_uid())
    return ds


def without_file_meta(ds: Dataset, path: Path) -> Path:
    """A dataset written raw: no preamble, no 'DICM' prefix, no file meta."""
    ds = pydicom.dcmread(_round_trip(ds))
    del ds.file_meta
    ds.preamble = None
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path
