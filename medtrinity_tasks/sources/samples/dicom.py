"""``synthetic_ct_dicom``: the phantom as axial CT series with a DICOM SEG each, every file carrying fake
identifiers (``FAKE_PHI``, also in folder names) so that tests can prove none leaks; and the series and datasets
other DICOM tests build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medtrinity_tasks.sources.samples.phantom import LABELS, case_affine, case_lesions, fresh, phantom

DICOM_SOURCE_ID = "synthetic_ct_dicom"
DICOM_SHAPE = (256, 256, 24)
DICOM_SPACING = (1.5, 1.5, 5.0)
FAKE_PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PHI-12345",
    "PatientBirthDate": "19700101",
    "AccessionNumber": "ACC-999",
    "InstitutionName": "General Hospital",
}
"""Identifiers every sample DICOM file carries (also in folder names), so tests can prove none leaks."""


DICOM_ACQUISITIONS = {  # ImageOrientationPatient (row, column cosines in LPS) of a series' slices
    "axial": (1, 0, 0, 0, 1, 0),
    "sagittal": (0, 1, 0, 0, 0, -1),
    "coronal": (1, 0, 0, 0, 0, -1),
}
ACQUISITION_AXES = {"axial": (1, 0, 2), "sagittal": (2, 1, 0), "coronal": (2, 0, 1)}
"""Per acquisition, the L, P, S grid axes along a frame's rows, along its columns, and across slices."""


def _with_phi(ds, sop_class: str, syntax: str | None = None):
    """``ds`` with file meta, SOP identity and the fake identifiers every sample file carries."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    for keyword, value in FAKE_PHI.items():
        setattr(ds, keyword, value)
    return ds


def acquired_frames(grid: np.ndarray, acquisition: str) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """A grid stored along L, P, S cut into the frames of a series acquired in ``acquisition``:
    per frame, the pixels [row, column] and the grid index of its first pixel."""
    nx, ny, nz = grid.shape
    if acquisition == "axial":  # rows go posterior, columns go left
        return [(grid[:, :, k].T, (0, 0, k)) for k in range(nz)]
    if acquisition == "sagittal":  # rows go inferior, columns go posterior
        return [(grid[a, :, ::-1].T, (a, 0, nz - 1)) for a in range(nx)]
    if acquisition == "coronal":  # rows go inferior, columns go left
        return [(grid[:, b, ::-1].T, (0, b, nz - 1)) for b in range(ny)]
    raise ValueError(f"acquisition {acquisition!r} is not one of {sorted(DICOM_ACQUISITIONS)}")


def ct_series(hu: np.ndarray, affine: np.ndarray, acquisition: str = "axial") -> list:
    """A CT series (pydicom datasets carrying the fake identifiers) of ``hu``, a grid stored along
    L, P, S whose voxel-to-RAS ``affine`` is diagonal, acquired as axial, sagittal or coronal slices."""
    from pydicom.dataset import Dataset
    from pydicom.uid import CTImageStorage, generate_uid

    spacing = [abs(float(affine[axis, axis])) for axis in range(3)]
    row_axis, column_axis, normal_axis = ACQUISITION_AXES[acquisition]
    study, series_uid, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for number, (pixels, (a, b, c)) in enumerate(acquired_frames(hu, acquisition)):
        ds = _with_phi(Dataset(), CTImageStorage)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series_uid, frame_of_reference
        ds.Modality, ds.BodyPartExamined, ds.StudyDate = "CT", "ABDOMEN", "20200101"
        ds.SeriesDescription = ds.StudyDescription = "SYNTHETIC phantom, fake identifiers, not patient data"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, number + 1
        ds.PatientSex, ds.PatientAge = "F", "050Y"
        ds.ReferringPhysicianName, ds.StudyTime, ds.Manufacturer = "", "000000", "Phantom"
        ras = affine @ np.array([a, b, c, 1.0])
        ds.ImagePositionPatient = [-float(ras[0]), -float(ras[1]), float(ras[2])]  # DICOM positions are LPS
        ds.ImageOrientationPatient = list(DICOM_ACQUISITIONS[acquisition])
        ds.PixelSpacing, ds.SliceThickness = [spacing[row_axis], spacing[column_axis]], spacing[normal_axis]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = np.ascontiguousarray((pixels + 1024).clip(0, 65535).astype(np.uint16)).tobytes()
        datasets.append(ds)
    return datasets


def save_series(folder: Path, datasets: list) -> None:
    """One file per dataset, named by position in the series."""
    import pydicom

    folder.mkdir(parents=True)
    for k, ds in enumerate(datasets):
        pydicom.dcmwrite(folder / f"IM{k:04d}.dcm", ds, enforce_file_format=True)


def write_ct_dicom(out: Path, cases: int = 3, seed: int = 19, bad_inputs: bool = False) -> Path:
    """Axial CT series (one per case, folders named like a PACS export, carrying fake PHI) with a
    DICOM SEG of the organs and lesions, built with highdicom. ``bad_inputs`` adds the files a PACS
    export or a public collection really holds beside its images (RT plans and doses, reports,
    waveforms, raw datasets, burned-in screenshots) and annotated series broken in the ways the
    reader must catch (truncated pixel data, mixed sizes, a malformed value, a codec nobody ships)."""
    from highdicom.seg import SegmentAlgorithmTypeValues, Segmentation, SegmentDescription
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    root = fresh(Path(out) / DICOM_SOURCE_ID)
    root.mkdir(parents=True)
    # every file in a DICOM tree is an input: the headers say SYNTHETIC instead of a readme file
    rng = np.random.default_rng(seed)

    def segmentation(datasets: list, labels: np.ndarray) -> Segmentation:
        return Segmentation(
            source_images=datasets,
            pixel_array=np.stack([frame for frame, _ in acquired_frames(labels, "axial")]).astype(np.uint8),
            segmentation_type="BINARY",
            segment_descriptions=[
                SegmentDescription(
                    segment_number=n,
                    segment_label=LABELS[n],
                    segmented_property_category=codes.SCT.Tissue,
                    segmented_property_type=codes.SCT.Tissue,
                    algorithm_type=SegmentAlgorithmTypeValues.MANUAL,
                )
                for n in range(1, int(labels.max()) + 1)
            ],
            series_instance_uid=generate_uid(),
            series_number=50,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="Phantom",
            manufacturer_model_name="samples",
            software_versions="1",
            device_serial_number="1",
        )

    for case in range(cases):
        affine = case_affine("LPS", case, DICOM_SHAPE, DICOM_SPACING)
        hu, labels = phantom(affine, case_lesions(case), rng, DICOM_SHAPE)
        folder = (
            root / f"{FAKE_PHI['PatientName'].replace('^', '_')}_{FAKE_PHI['PatientID']}" / f"CT_{case:02d}_19700101"
        )
        datasets = ct_series(hu, affine)
        save_series(folder / "series", datasets)
        segmentation(datasets, labels).save_as(folder / "seg.dcm")
    if bad_inputs:
        _write_bad_dicom(root / "bad", rng, segmentation)
    return root


BAD_DICOM = {
    "zero-byte file": 1,
    "not a DICOM file (no 'DICM' prefix or file meta)": 1,
    "not an image": 4,
    "DICOM dataset without file meta (no preamble, 'DICM' prefix or transfer syntax)": 1,
    "image flagged with burned-in annotation": 1,
    "truncated pixel data in file": 1,
    "slice positions are unevenly spaced": 2,  # the stacks left by the mis-sized and the malformed slice
    "malformed image header": 1,  # the malformed slice, read alone (its odd-sized neighbour makes a record)
    "cannot decode transfer syntax MPEG2 Main Profile / Main Level": 1,
}
"""What the DICOM sample's bad inputs are rejected for, counted by reason kind (as a manifest counts)."""


def _write_bad_dicom(bad: Path, rng: np.random.Generator, segmentation) -> None:
    """What a PACS export or a public collection holds beside its images, and annotated series broken in the ways
    the reader must catch (``BAD_DICOM`` counts their reasons)."""
    import pydicom

    bad.mkdir()
    _write_non_images(bad)
    affine = case_affine("LPS", 0, DICOM_SHAPE, DICOM_SPACING)
    hu, labels = phantom(affine, case_lesions(0), rng, DICOM_SHAPE)
    middle = np.s_[:, :, DICOM_SHAPE[2] // 2 - 2 : DICOM_SHAPE[2] // 2 + 2]  # four slices through the liver

    raw = ct_series(hu[middle], affine)[0]
    del raw.file_meta
    raw.preamble = None
    raw.save_as(bad / "raw.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    burned = ct_series(hu[middle], affine)[0]
    burned.BurnedInAnnotation = "YES"
    pydicom.dcmwrite(bad / "burned.dcm", burned, enforce_file_format=True)
    save_series(bad / "unannotated", ct_series(hu[middle], affine))  # not bad: the sample expert labels it
    for name, change in _BREAKAGES.items():
        datasets = ct_series(hu[middle], affine)
        seg = segmentation(datasets, labels[middle])
        change(datasets)
        save_series(bad / name / "series", datasets)
        seg.save_as(bad / name / "seg.dcm")


def _write_non_images(bad: Path) -> None:
    """An empty file, a text file, and DICOM objects that are no images (RT plan and dose, a report, a waveform)."""
    import pydicom
    from pydicom.dataset import Dataset

    (bad / "empty.dcm").write_bytes(b"")
    (bad / "notes.dcm").write_text(f"{FAKE_PHI['PatientName']} {FAKE_PHI['PatientID']}: not DICOM\n")
    non_images = {
        "plan.dcm": ("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN"),  # RT Plan
        "dose.dcm": ("1.2.840.10008.5.1.4.1.1.481.2", "RTDOSE"),  # RT Dose
        "report.dcm": ("1.2.840.10008.5.1.4.1.1.88.11", "SR"),  # Basic Text SR
        "ecg.dcm": ("1.2.840.10008.5.1.4.1.1.9.1.1", "ECG"),  # 12-lead ECG waveform
    }
    for name, (sop_class, modality) in non_images.items():
        ds = _with_phi(Dataset(), sop_class)
        ds.Modality, ds.SeriesInstanceUID = modality, pydicom.uid.generate_uid()
        pydicom.dcmwrite(bad / name, ds, enforce_file_format=True)


def _truncated(datasets: list) -> None:
    datasets[1].PixelData = datasets[1].PixelData[:-300]


def _mixed_sizes(datasets: list) -> None:
    datasets[1].Rows = 128
    datasets[1].PixelData = datasets[1].PixelData[: 128 * datasets[1].Columns * 2]


def _malformed_value(datasets: list) -> None:
    """An IS value that is not a number, stored raw as a broken writer would."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(0x00280008)  # NumberOfFrames
    datasets[1]._dict[tag] = RawDataElement(tag, "IS", 2, b"x ", 0, False, True)


def _unsupported_codec(datasets: list) -> None:
    """RLE-compressed pixels under a transfer syntax no plugin decodes."""
    from pydicom.uid import MPEG2MPML, RLELossless

    for ds in datasets:
        ds.compress(RLELossless)
        ds.file_meta.TransferSyntaxUID = MPEG2MPML


_BREAKAGES = {
    "truncated": _truncated,
    "mixed_sizes": _mixed_sizes,
    "malformed_value": _malformed_value,
    "unsupported_codec": _unsupported_codec,
}
"""The annotated series broken for the reader to catch, by folder name, with how each is broken. A slice of another
size, or one whose geometry cannot be read, is an input of its own: the slices around it no longer stack evenly."""
