"""Synthetic sample sources, one per supported format, for demos and tests. All computer-generated,
no patient data, and labelled so in the files they write.

- ``synthetic_ct_abdomen``: CT-like phantoms in the Medical Segmentation Decathlon layout. Lesions
  have known size and position in known organs, and each case is stored with a different,
  non-trivial affine (flipped axes, offsets, anisotropic voxels), so orientation handling is
  exercised end to end. ``ground_truth.json`` lists every lesion in patient terms.
- ``synthetic_dermoscopy``: RGB skin images with one pigmented lesion each and ISIC-style binary
  masks (``masks/<stem>_segmentation.png``); ``ground_truth.json`` gives each lesion's box.
- ``synthetic_chest_xray``: 16-bit frontal radiographs with a findings/boxes/report CSV.
- ``synthetic_pathology_tiles``: RGB TIFF tiles in one folder per tissue class.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

CT_SOURCE_ID = "synthetic_ct_abdomen"
DERMOSCOPY_SOURCE_ID = "synthetic_dermoscopy"
SHAPE = (512, 512, 40)  # a clinical CT matrix, 5 mm slices
SPACING = (0.75, 0.75, 5.0)  # mm along the stored array axes
ORIENTATIONS = ("LPS", "RAS", "LAS", "RPI")  # stored axis codes, cycled over cases

UNLABELLED_CASES = 2
"""Cases written without labels, in imagesTs/, for the sample expert."""

LABELS = {0: "background", 1: "liver", 2: "liver tumour", 3: "spleen", 4: "kidney", 5: "renal cyst"}

# Ellipsoids in RAS+ millimetres around the body centre: (label, centre, semi-axes, HU).
ORGANS = [
    (1, (55.0, 10.0, 10.0), (60.0, 50.0, 60.0), 60.0),  # liver: patient right, anterior
    (3, (-75.0, -15.0, 20.0), (25.0, 35.0, 40.0), 50.0),  # spleen: patient left, posterior
    (4, (55.0, -65.0, -25.0), (20.0, 25.0, 35.0), 140.0),  # right kidney, contrast-enhanced
    (4, (-55.0, -65.0, -25.0), (20.0, 25.0, 35.0), 140.0),  # left kidney
]


def _lesions(case: int) -> list[dict]:
    """Each case has a liver tumour; every other case also a cyst in the left kidney."""
    lesions = [
        {
            "label": 2,
            "name": "liver tumour",
            "organ": "liver",
            "center_ras_mm": [50.0 + 4 * (case % 3), 20.0 - 3 * (case % 4), 15.0],
            "radius_mm": 10.0 + 2.0 * (case % 4),
            "hu": 10.0,
            "side": "right",
        }
    ]
    if case % 2 == 0:
        lesions.append(
            {
                "label": 5,
                "name": "renal cyst",
                "organ": "kidney",
                "center_ras_mm": [-55.0, -65.0, -25.0],
                "radius_mm": 9.0,
                "hu": 0.0,
                "side": "left",
            }
        )
    return lesions


def _affine(orientation: str, case: int, shape=SHAPE, spacing=SPACING) -> np.ndarray:
    """Voxel-to-RAS affine for an array stored with the given axis codes, centred near the origin."""
    signs = [1.0 if code in "RAS" else -1.0 for code in orientation]
    affine = np.diag([s * d for s, d in zip(signs, spacing, strict=True)] + [1.0])
    centre_voxel = (np.array(shape) - 1) / 2.0
    offset = np.array([3.5 * case, -2.0 * case, 1.5 * case])  # a different origin for every case
    affine[:3, 3] = offset - affine[:3, :3] @ centre_voxel
    return affine


def _phantom(
    affine: np.ndarray, lesions: list[dict], rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    # The affines are diagonal (flips, scales, offsets), so each world axis depends on one array
    # axis: broadcast three coordinate vectors instead of materialising a world grid.
    world = [
        (affine[axis, axis] * np.arange(shape[axis], dtype=np.float32) + affine[axis, 3]).reshape(
            [-1 if a == axis else 1 for a in range(3)]
        )
        for axis in range(3)
    ]
    x, y, z = world
    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    body = np.broadcast_to((x / 150.0) ** 2 + (y / 110.0) ** 2 <= 1.0, shape)
    hu[body] = -100.0  # subcutaneous fat
    hu[np.broadcast_to((x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1.0, shape)] = 40.0  # soft tissue
    for label, centre, semi, value in ORGANS:
        inside = sum(((w - c) / s) ** 2 for w, c, s in zip(world, centre, semi, strict=True)) <= 1.0
        hu[inside], labels[inside] = value, label
    for lesion in lesions:
        inside = (
            sum((w - c) ** 2 for w, c in zip(world, lesion["center_ras_mm"], strict=True)) <= lesion["radius_mm"] ** 2
        )
        hu[inside], labels[inside] = lesion["hu"], lesion["label"]
    hu += rng.standard_normal(shape, dtype=np.float32) * 8.0
    return np.round(hu).astype(np.int16), labels


def write_ct_abdomen(out: Path, cases: int = 8, seed: int = 7, bad_inputs: bool = False, first_case: int = 0) -> Path:
    """Write the sample source under ``out/synthetic_ct_abdomen`` and return that directory.

    Lesion sizes and places, and the stored orientation, follow the case number: ``first_case``
    gives a held-out set other layouts (the sample expert trains on cases 0-7).

    ``bad_inputs`` adds four broken cases (truncated file, mismatched mask, empty mask, a text file
    with a .nii.gz name) so that rejection and accounting can be seen and tested.
    """
    import nibabel as nib

    root = _fresh(Path(out) / CT_SOURCE_ID)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    (root / "imagesTs").mkdir()  # the last UNLABELLED_CASES, as the Decathlon's test images: the expert labels them
    training, test, truth = [], [], {}
    for case in range(first_case, first_case + cases + UNLABELLED_CASES):
        name = f"phantom_{case:03d}.nii.gz"
        orientation = ORIENTATIONS[case % len(ORIENTATIONS)]
        affine = _affine(orientation, case)
        lesions = _lesions(case)
        hu, labels = _phantom(affine, lesions, rng)
        folder = "imagesTr" if case < first_case + cases else "imagesTs"
        nib.save(nib.Nifti1Image(hu, affine), root / folder / name)
        if folder == "imagesTr":
            nib.save(nib.Nifti1Image(labels, affine), root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
        truth[f"{folder}/{name}"] = {"orientation": orientation, "lesions": lesions}
    if bad_inputs:
        training += _write_bad_inputs(root, rng)
    dataset = {
        "name": "SyntheticAbdomenCT",
        "description": "SYNTHETIC computer-generated abdominal CT phantoms for pipeline demos and tests; "
        "not patient data.",
        "reference": "medtrinity samples",
        "licence": "CC0-1.0",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LABELS.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    (root / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    return root


def _fresh(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    return root


def _write_bad_inputs(root: Path, rng: np.random.Generator) -> list[dict]:
    import nibabel as nib

    affine = _affine("RAS", 0)
    hu, labels = _phantom(affine, _lesions(0), rng)
    entries = []

    def save(name: str, image, label) -> None:
        nib.save(image, root / "imagesTr" / name)
        nib.save(label, root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})

    save("bad_truncated.nii.gz", nib.Nifti1Image(hu, affine), nib.Nifti1Image(labels, affine))
    data = (root / "imagesTr" / "bad_truncated.nii.gz").read_bytes()
    (root / "imagesTr" / "bad_truncated.nii.gz").write_bytes(data[: len(data) // 3])
    save("bad_mask_shape.nii.gz", nib.Nifti1Image(hu, affine), nib.Nifti1Image(labels[:, :-8, :], affine))
    save("bad_empty_mask.nii.gz", nib.Nifti1Image(hu, affine), nib.Nifti1Image(np.zeros_like(labels), affine))
    save("bad_not_nifti.nii.gz", nib.Nifti1Image(hu, affine), nib.Nifti1Image(labels, affine))
    (root / "imagesTr" / "bad_not_nifti.nii.gz").write_text("this is a text file, not a NIfTI volume\n")
    return entries


SKIN_RGB = (224, 178, 148)
LESION_RGB = (112, 72, 52)
DERMOSCOPY_SIZE = (320, 240)  # width, height
BAD_DERMOSCOPY = {
    "images/bad_zero_bytes.jpg": "not a readable image",
    "images/bad_text.jpg": "not a readable image",
    "images/bad_mask_size.jpg": "mask size (100, 100) differs from image size (320, 240)",
    "images/bad_no_mask.jpg": "file is missing: bad_no_mask_segmentation.png",
    "masks/orphan_segmentation.png": "mask file without a matching image",
}
"""The broken inputs ``write_dermoscopy(bad_inputs=True)`` adds, and the start of each reject reason."""


def write_dermoscopy(
    out: Path, cases: int = 8, seed: int = 11, bad_inputs: bool = False, size: tuple[int, int] = DERMOSCOPY_SIZE
) -> Path:
    """Write the 2D sample source under ``out/synthetic_dermoscopy`` and return that directory.
    ``size`` (width, height) lets benchmarks write camera-sized images."""
    from PIL import Image

    root = _fresh(Path(out) / DERMOSCOPY_SOURCE_ID)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "SYNTHETIC.txt").write_text(
        "Computer-generated dermoscopy-like images for pipeline tests; not patient data.\n"
    )
    rng = np.random.default_rng(seed)
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width]
    truth = {}
    for case in range(cases):
        # lesion centres walk over a 3 x 3 grid of the image so that every location word occurs
        cx = width * (0.2 + 0.3 * (case % 3)) + rng.uniform(-8, 8)
        cy = height * (0.2 + 0.3 * ((case // 3) % 3)) + rng.uniform(-8, 8)
        a, b = width * rng.uniform(0.06, 0.12), height * rng.uniform(0.06, 0.12)
        mask = ((xs - cx) / a) ** 2 + ((ys - cy) / b) ** 2 <= 1.0
        shading = 1.0 - 0.15 * ((xs - width / 2) ** 2 + (ys - height / 2) ** 2) / (width * height / 2)
        pixels = np.array(SKIN_RGB, np.float32) * shading[..., None]
        pixels[mask] = LESION_RGB
        pixels += rng.normal(0.0, 6.0, pixels.shape)
        name = f"synthetic_{case:04d}"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / "images" / f"{name}.jpg", quality=92)
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}_segmentation.png")
        x0, x1 = np.flatnonzero(mask.any(axis=0))[[0, -1]]
        y0, y1 = np.flatnonzero(mask.any(axis=1))[[0, -1]]
        truth[f"images/{name}.jpg"] = {"bbox_xyxy": [int(x0), int(y0), int(x1) + 1, int(y1) + 1]}
    if bad_inputs:
        image = Image.fromarray(np.full((height, width, 3), SKIN_RGB, np.uint8))
        (root / "images" / "bad_zero_bytes.jpg").write_bytes(b"")
        (root / "masks" / "bad_zero_bytes_segmentation.png").write_bytes(b"")
        (root / "images" / "bad_text.jpg").write_text("not an image\n")
        image.save(root / "images" / "bad_mask_size.jpg")
        Image.fromarray(np.zeros((100, 100), np.uint8)).save(root / "masks" / "bad_mask_size_segmentation.png")
        image.save(root / "images" / "bad_no_mask.jpg")
        Image.fromarray(np.zeros((height, width), np.uint8)).save(root / "masks" / "orphan_segmentation.png")
    (root / "ground_truth.json").write_text(json.dumps(truth, indent=2))
    return root


CXR_SOURCE_ID = "synthetic_chest_xray"
CXR_SIZE = 256
BAD_CHEST_XRAY = {
    "images/bad_missing.png": "file is missing",
    "images/bad_unlisted.png": "not listed in table.csv",
    "images/bad_label.png": "label 'Alien' is not defined",
    "images/bad_box.png": "box ['a', '1', '2', '3'] is not four numbers",
}
"""Broken inputs ``write_chest_xray(bad_inputs=True)`` adds, and the start of each reject reason; it
also adds ``images/bad_box_outside.png``, whose box lies outside the image: the gate quarantines it."""


def write_chest_xray(out: Path, cases: int = 8, seed: int = 13, bad_inputs: bool = False) -> Path:
    """Frontal chest radiographs (16-bit PNG) with a CSV of findings, boxes and report sentences,
    in the manner of NIH ChestX-ray14's tables; nodules sit at known places in the lungs."""
    import csv

    from PIL import Image

    root = _fresh(Path(out) / CXR_SOURCE_ID)
    (root / "images").mkdir(parents=True)
    (root / "SYNTHETIC.txt").write_text("Computer-generated chest radiograph-like images; not patient data.\n")
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:CXR_SIZE, 0:CXR_SIZE].astype(np.float32)
    rows = []

    def radiograph(nodule: tuple[float, float, float] | None) -> np.ndarray:
        body = 30000 - 8000 * ((xs - 128) / 128) ** 2
        for cx in (80, 176):  # lung fields: dark
            body[((xs - cx) / 38) ** 2 + ((ys - 120) / 80) ** 2 <= 1] -= 14000
        if nodule:
            x, y, r = nodule
            body[(xs - x) ** 2 + (ys - y) ** 2 <= r**2] += 9000
        return np.clip(body + rng.normal(0, 600, body.shape), 0, 65535).astype(np.uint16)

    for case in range(cases):
        name = f"cxr_{case:04d}.png"
        if case % 2:  # a nodule in the right (image left) or left lung, upper or lower zone
            x = 80.0 if case % 4 == 1 else 176.0
            y = 80.0 if case % 8 < 4 else 160.0
            r = 7.0 + case % 3
            Image.fromarray(radiograph((x, y, r))).save(root / "images" / name)
            side = "right" if x < 128 else "left"
            zone = "upper" if y < 120 else "lower"
            box = [f"{x - r:.0f}", f"{y - r:.0f}", f"{2 * r + 1:.0f}", f"{2 * r + 1:.0f}"]
            rows.append([name, "Nodule", *box, f"A nodule in the {side} {zone} lung zone."])
        else:
            Image.fromarray(radiograph(None)).save(root / "images" / name)
            rows.append([name, "No Finding", "", "", "", "", "No acute cardiopulmonary abnormality."])
    if bad_inputs:
        for name in ("bad_unlisted.png", "bad_label.png", "bad_box.png", "bad_box_outside.png"):
            Image.fromarray(radiograph(None)).save(root / "images" / name)
        rows += [
            ["bad_missing.png", "No Finding", "", "", "", "", ""],
            ["bad_label.png", "Alien", "", "", "", "", ""],
            ["bad_box.png", "Nodule", "a", "1", "2", "3", ""],
            ["bad_box_outside.png", "Nodule", "300", "20", "10", "10", "A nodule beyond the film."],
        ]
    with (root / "table.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Label", "x", "y", "w", "h", "Report"])
        writer.writerows(rows)
    return root


TILES_SOURCE_ID = "synthetic_pathology_tiles"
TILE_CLASSES = {"ADI": (245, 240, 245), "NORM": (200, 120, 170), "TUM": (120, 50, 130)}
BAD_TILES = {
    "images/stray.tif": "not inside a class folder",
    "images/XYZ/x_0000.tif": "folder 'XYZ' is not a label",
    "images/TUM/bad_zero_bytes.tif": "not a readable image",
}


def write_pathology_tiles(out: Path, cases: int = 8, seed: int = 17, bad_inputs: bool = False) -> Path:
    """H&E-like RGB TIFF tiles sorted into one folder per tissue class (NCT-CRC-HE-100K style)."""
    from PIL import Image

    root = _fresh(Path(out) / TILES_SOURCE_ID)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    (root / "SYNTHETIC.txt").write_text("Computer-generated tissue-like tiles; not patient data.\n")

    def tile(colour) -> Image.Image:
        pixels = np.array(colour, np.float32) + rng.normal(0, 12, (112, 112, 3))
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    for number, (name, colour) in enumerate(sorted(TILE_CLASSES.items())):
        (root / "images" / name).mkdir(parents=True)
        for case in range(cases):
            tile(colour).save(root / "images" / name / f"{name}-{number}{case:03d}.tif")
    if bad_inputs:
        tile(TILE_CLASSES["ADI"]).save(root / "images" / "stray.tif")
        (root / "images" / "XYZ").mkdir()
        tile(TILE_CLASSES["ADI"]).save(root / "images" / "XYZ" / "x_0000.tif")
        (root / "images" / "TUM" / "bad_zero_bytes.tif").write_bytes(b"")
    return root


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

    root = _fresh(Path(out) / DICOM_SOURCE_ID)
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
        affine = _affine("LPS", case, DICOM_SHAPE, DICOM_SPACING)
        hu, labels = _phantom(affine, _lesions(case), rng, DICOM_SHAPE)
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
    "inconsistent series": 1,
    "malformed geometry or pixel description in file": 1,
    "cannot decode transfer syntax MPEG2 Main Profile / Main Level": 1,
}
"""What the DICOM sample's bad inputs are rejected for, counted by reason kind (as a manifest counts)."""


def _write_bad_dicom(bad: Path, rng: np.random.Generator, segmentation) -> None:
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag
    from pydicom.uid import MPEG2MPML, RLELossless

    bad.mkdir()
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

    affine = _affine("LPS", 0, DICOM_SHAPE, DICOM_SPACING)
    hu, labels = _phantom(affine, _lesions(0), rng, DICOM_SHAPE)
    middle = np.s_[:, :, DICOM_SHAPE[2] // 2 - 2 : DICOM_SHAPE[2] // 2 + 2]  # four slices through the liver

    raw = ct_series(hu[middle], affine)[0]
    del raw.file_meta
    raw.preamble = None
    raw.save_as(bad / "raw.dcm", implicit_vr=True, little_endian=True, enforce_file_format=False)
    burned = ct_series(hu[middle], affine)[0]
    burned.BurnedInAnnotation = "YES"
    pydicom.dcmwrite(bad / "burned.dcm", burned, enforce_file_format=True)
    save_series(bad / "unannotated", ct_series(hu[middle], affine))  # not bad: the sample expert labels it

    def truncated(datasets):
        datasets[1].PixelData = datasets[1].PixelData[:-300]

    def mixed_sizes(datasets):
        datasets[1].Rows = 128
        datasets[1].PixelData = datasets[1].PixelData[: 128 * datasets[1].Columns * 2]

    def malformed_value(datasets):  # an IS value that is not a number, stored raw as a broken writer would
        tag = Tag(0x00280008)  # NumberOfFrames
        datasets[1]._dict[tag] = RawDataElement(tag, "IS", 2, b"x ", 0, False, True)

    def unsupported_codec(datasets):  # RLE-compressed pixels under a transfer syntax no plugin decodes
        for ds in datasets:
            ds.compress(RLELossless)
            ds.file_meta.TransferSyntaxUID = MPEG2MPML

    for name, change in {
        "truncated": truncated,
        "mixed_sizes": mixed_sizes,
        "malformed_value": malformed_value,
        "unsupported_codec": unsupported_codec,
    }.items():
        datasets = ct_series(hu[middle], affine)
        seg = segmentation(datasets, labels[middle])
        change(datasets)
        save_series(bad / name / "series", datasets)
        seg.save_as(bad / name / "seg.dcm")


SAMPLE_SOURCES = {
    CT_SOURCE_ID: write_ct_abdomen,
    DERMOSCOPY_SOURCE_ID: write_dermoscopy,
    CXR_SOURCE_ID: write_chest_xray,
    TILES_SOURCE_ID: write_pathology_tiles,
    DICOM_SOURCE_ID: write_ct_dicom,
}
"""Every sample source by catalog id, with the function that writes it."""
