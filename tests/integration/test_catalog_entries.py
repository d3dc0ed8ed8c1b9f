"""The shipped catalog of real public sources: every entry validates, and miniature copies staged in
each entry's published layout (file names, folders, table headers as the providers ship them) run
through the pipeline with every file accounted for."""

import csv
import io
import json
import os

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.run.local import run_source
from medtrinity_tasks.sources.catalog import get_source, load_catalog
from medtrinity_tasks.storage.shards import manifest_key
from medtrinity_tasks.storage.store import LocalStore


@pytest.fixture
def data_dir(settings_env, tmp_path, monkeypatch):
    """MEDTRINITY_DATA_DIR, where a site stages its copies of public sources."""
    root = tmp_path / "staged"
    root.mkdir()
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(root))
    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    return root


def _run(source_id: str) -> tuple[dict, dict, list[dict]]:
    """Counts, manifest and records of a run of ``source_id``."""
    result = run_source(source_id, progress=lambda line: None)
    store = LocalStore(os.environ["MEDTRINITY_OUTPUT"])
    manifest = store.read_json(manifest_key(source_id))
    records = [r for shard in manifest["shards"] for r in pq.read_table(shard["uri"]).to_pylist()]
    counts = result["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
    return counts, manifest, records


def _rejects(manifest: dict) -> dict:
    return {r["input"]: r["reason"] for r in manifest["rejected"]}


def _volume(path, shape=(40, 40, 10), channels: int = 0):
    """A small noisy volume (with ``channels`` in a 4th axis, if any) as NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.5, 1.5, 4.0, 1.0])
    rng = np.random.default_rng(len(str(path)))
    image = rng.normal(40, 20, (*shape, channels) if channels else shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), str(path))


def _labels(path, regions: dict[int, tuple[slice, slice, slice]], shape=(40, 40, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.zeros(shape, dtype=np.uint8)
    for value, region in regions.items():
        label[region] = value
    nib.save(nib.Nifti1Image(label, np.diag([1.5, 1.5, 4.0, 1.0])), str(path))


TUMOUR_IN_KIDNEY = {1: np.s_[5:25, 5:25, 2:8], 2: np.s_[10:16, 10:16, 4:6]}


def _write_csv(path, header: list[str], rows: list[list]):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _png(path, size=(64, 64), mode="L", value=90):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    if mode == "I;16":
        pixels = (32768 + rng.normal(40, 30, size[::-1])).astype(np.uint16)
        Image.fromarray(pixels).save(path)
    else:
        channels = (*size[::-1], 3) if mode == "RGB" else size[::-1]
        Image.fromarray(np.clip(rng.normal(value, 25, channels), 0, 255).astype(np.uint8)).save(path)


def test_shipped_catalog_has_twenty_real_sources_with_licences_and_homepages():
    catalog = load_catalog()
    real = {source_id: entry for source_id, entry in catalog.items() if not entry.synthetic}
    assert len(real) >= 20, sorted(real)
    for entry in real.values():
        assert entry.homepage and entry.homepage.startswith("http"), entry.id
        assert entry.licence.strip(), entry.id
        assert entry.location.startswith("${MEDTRINITY_DATA_DIR}/"), entry.id  # never downloaded: staged by the site
        assert entry.labels, entry.id
    assert {"nifti", "dicom", "image2d"} == {entry.format for entry in real.values()}


def test_unset_data_dir_is_a_clear_error(settings_env, monkeypatch):
    monkeypatch.delenv("MEDTRINITY_DATA_DIR", raising=False)
    with pytest.raises(MedtrinityError, match="MEDTRINITY_DATA_DIR.*not set"):
        get_source("kits19").location_path()


def test_kits19_case_folders(data_dir):
    root = data_dir / "kits19" / "data"
    for case in ("case_00000", "case_00001"):
        _volume(root / case / "imaging.nii.gz")
        _labels(root / case / "segmentation.nii.gz", TUMOUR_IN_KIDNEY)
    _volume(root / "case_00210" / "imaging.nii.gz")  # a test case: imaging only
    (root / "kits.json").write_text("[]")
    counts, manifest, records = _run("kits19")
    rejects = _rejects(manifest)
    assert rejects["case_00210/imaging.nii.gz"].startswith("file is missing")
    assert rejects["kits.json"] == "neither an image of the layout nor the label of one"
    assert counts["used"] == 2
    tumours = [roi for r in records for roi in r["rois"]]
    assert {roi["label"] for roi in tumours} == {"kidney tumour"}
    assert all("within the kidney" in roi["location"] for roi in tumours)
    assert len({r["image"]["path"] for r in records}) == len(records)  # case folders reuse file names


def test_brats2021_sequences_are_inputs_over_one_label_map(data_dir):
    case = data_dir / "BraTS2021_Training_Data" / "BraTS2021_00000"
    for sequence in ("flair", "t1", "t1ce", "t2"):
        _volume(case / f"BraTS2021_00000_{sequence}.nii.gz")
    _labels(case / "BraTS2021_00000_seg.nii.gz", {2: np.s_[8:30, 8:30, 2:8], 1: np.s_[14:20, 14:20, 4:6]})
    counts, manifest, records = _run("brats2021")
    assert counts["used"] == 4 and counts["rejected"] == 0
    assert {r["sequence"] for r in records} == {"FLAIR", "T1", "T1Gd", "T2"}
    flair = next(r for r in records if r["sequence"] == "FLAIR" and r["rois"])
    assert flair["coarse_caption"].startswith("Axial magnetic resonance (MR) FLAIR slice of the brain")
    assert flair["diseases"] == ["glioma"]


def test_decathlon_4d_images_are_sliced_per_channel(data_dir):
    root = data_dir / "Task01_BrainTumour"
    _volume(root / "imagesTr" / "BRATS_001.nii.gz", channels=4)
    _labels(root / "labelsTr" / "BRATS_001.nii.gz", {1: np.s_[8:30, 8:30, 3:6], 3: np.s_[14:20, 14:20, 4:5]})
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble, as in the tars
    (root / "dataset.json").write_text(
        json.dumps({"training": [{"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}]})
    )
    counts, manifest, records = _run("msd_brain_tumour")
    assert _rejects(manifest) == {"imagesTr/._BRATS_001.nii.gz": "not listed in dataset.json"}
    assert {r["sequence"] for r in records} == {"FLAIR", "T1w", "T1Gd", "T2w"}
    per_sequence = {s: sorted(r["slice_index"] for r in records if r["sequence"] == s) for s in ("FLAIR", "T2w")}
    assert per_sequence["FLAIR"] == per_sequence["T2w"]  # the same slices of every channel
    assert len({r["id"] for r in records}) == len(records)


def test_lits_flat_folders_with_spaces(data_dir):
    for batch, case in (("Training Batch 1", 0), ("Training Batch 2", 28)):
        _volume(data_dir / "lits" / batch / f"volume-{case}.nii")
        _labels(data_dir / "lits" / batch / f"segmentation-{case}.nii", TUMOUR_IN_KIDNEY)
    _labels(data_dir / "lits" / "Training Batch 2" / "segmentation-99.nii", TUMOUR_IN_KIDNEY)  # orphan label
    counts, manifest, records = _run("lits")
    assert counts["used"] == 2
    assert _rejects(manifest) == {
        "Training Batch 2/segmentation-99.nii": "neither an image of the layout nor the label of one"
    }
    assert {roi["label"] for r in records for roi in r["rois"]} == {"liver tumour"}


def test_flare22_organs_are_the_regions_of_an_organ_only_source(data_dir):
    root = data_dir / "FLARE22" / "Training" / "FLARE22_LabeledCase50"
    _volume(root / "images" / "FLARE22_Tr_0001_0000.nii.gz")
    _labels(root / "labels" / "FLARE22_Tr_0001.nii.gz", {1: np.s_[4:20, 4:30, 3:5], 3: np.s_[24:36, 10:20, 4:7]})
    counts, manifest, records = _run("flare22")
    assert counts["used"] == 1
    assert sorted({r["slice_index"] for r in records if r["rois"]}) == [3, 4, 5, 6]
    liver = next(roi for r in records for roi in r["rois"] if roi["label"] == "liver")
    assert liver["location"].endswith("abdomen")  # placed in the body region, never within itself
    assert "liver" not in liver["location"]


def test_nih_chestxray14_findings_and_boxes_from_two_tables(data_dir):
    root = data_dir / "nih_chestxray14"
    for name in ("00000001_000.png", "00000002_000.png", "00000003_000.png"):
        _png(root / "images" / name, size=(128, 128))
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender"]
    header += ["View Position", "OriginalImage[Width,Height]", "OriginalImagePixelSpacing[x,y]"]
    _write_csv(
        root / "Data_Entry_2017.csv",
        header,
        [
            ["00000001_000.png", "Cardiomegaly|Effusion", 0, 1, 58, "M", "PA", 128, 128, 0.143, 0.143],
            ["00000002_000.png", "No Finding", 0, 2, 81, "F", "AP", 128, 128, 0.168, 0.168],
            ["00000003_000.png", "Infiltration", 0, 3, 74, "F", "PA", 128, 128, 0.143, 0.143],
        ],
    )
    _write_csv(
        root / "BBox_List_2017.csv",
        ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]", "", "", ""],
        [["00000003_000.png", "Infiltrate", 20.5, 30.0, 40.0, 35.5, "", "", ""]],
    )
    counts, manifest, records = _run("nih_chestxray14")
    assert counts["used"] == 3 and counts["rejected"] == 0
    by_name = {r["source_relpath"]: r for r in records}
    assert by_name["images/00000001_000.png"]["diseases"] == ["cardiomegaly", "pleural effusion"]
    (roi,) = by_name["images/00000003_000.png"]["rois"]
    assert roi["label"] == "infiltration" and roi["bbox_xyxy"] == [20.5, 30.0, 60.5, 65.5]


def test_chexpert_one_hot_columns_and_nested_paths(data_dir):
    root = data_dir / "chexpert"
    small = root / "CheXpert-v1.0-small"
    observations = get_source("chexpert").table.files[0].label_columns
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *observations]

    def row(path, positives=(), uncertain=()):
        return [path, "Female", 68, "Frontal", "AP"] + [
            "1.0" if o in positives else "-1.0" if o in uncertain else "" for o in observations
        ]

    for path in ("train/patient00001/study1/view1_frontal.jpg", "train/patient00002/study1/view1_frontal.jpg"):
        _png(small / path, size=(96, 80))
    _png(small / "valid/patient64541/study1/view1_frontal.jpg", size=(96, 80))
    _png(small / "train/patient00003/study1/view1_frontal.jpg", size=(96, 80))  # in no table
    _write_csv(
        small / "train.csv",
        header,
        [
            row("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", ["No Finding"]),
            row("CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg", ["Edema"], ["Pneumonia"]),
        ],
    )
    _write_csv(small / "valid.csv", header, [row("CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")])
    counts, manifest, records = _run("chexpert")
    assert counts["used"] == 3
    assert _rejects(manifest) == {
        "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg": "not listed in train.csv, valid.csv"
    }
    by_patient = {r["source_relpath"].split("/")[2]: r for r in records}
    assert by_patient["patient00002"]["diseases"] == ["pulmonary oedema"]  # uncertain pneumonia is not a label
    assert by_patient["patient64541"]["diseases"] == []
    assert len({r["image"]["path"] for r in records}) == 3  # every study's image is view1_frontal.jpg


def test_deeplesion_rewritten_names_single_cell_boxes_and_hu_offset(data_dir):
    root = data_dir / "deeplesion"
    _png(root / "Images_png" / "000001_01_01" / "109.png", size=(128, 128), mode="I;16")
    _png(root / "Images_png" / "000001_01_01" / "110.png", size=(128, 128), mode="I;16")  # a context slice
    header = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates"]
    header += ["Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type"]
    header += ["Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender"]
    header += ["Patient_age", "Train_Val_Test"]
    _write_csv(
        root / "DL_info.csv",
        header,
        [
            ["000001_01_01_109.png", 1, 1, 1, 109, "", "40.5, 50.2, 60.0, 66.75", "", "", 4, 0, "103, 115"]
            + ["0.78, 0.78, 5", "512, 512", "-175, 275", "F", 51, 2]
        ],
    )
    counts, manifest, records = _run("deeplesion")
    assert counts["used"] == 1
    assert _rejects(manifest) == {"Images_png/000001_01_01/110.png": "not listed in DL_info.csv"}
    (record,) = records
    (roi,) = record["rois"]
    assert roi["label"] == "liver lesion" and roi["bbox_xyxy"] == [40.5, 50.2, 60.0, 66.75]
    pixels = np.asarray(Image.open(io.BytesIO(record["image"]["bytes"])))
    # noise of ~40 +- 30 HU in a soft-tissue window (-160..240 HU) lands mid-grey, not black or white
    assert 80 < pixels.mean() < 150


def test_isic2018_classification_names_images_without_extension(data_dir):
    root = data_dir / "isic2018"
    for image in ("ISIC_0024306", "ISIC_0024307"):
        _png(root / "ISIC2018_Task3_Training_Input" / f"{image}.jpg", size=(60, 45), mode="RGB", value=150)
    (root / "ISIC2018_Task3_Training_Input" / "LICENSE.txt").write_text("CC-BY-NC 4.0\n")
    _write_csv(
        root / "ISIC2018_Task3_Training_GroundTruth" / "ISIC2018_Task3_Training_GroundTruth.csv",
        ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"],
        [["ISIC_0024306", "0.0", "1.0", "0.0", "0.0", "0.0", "0.0", "0.0"], ["ISIC_0024307", "1.0"] + ["0.0"] * 6],
    )
    counts, manifest, records = _run("isic2018_classification")
    assert counts["used"] == 2
    assert _rejects(manifest)["ISIC2018_Task3_Training_Input/LICENSE.txt"].startswith("not listed in")
    assert sorted(d for r in records for d in r["diseases"]) == ["melanocytic nevus", "melanoma"]


def _radiograph(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", burned_in: bool = False):
    """A single-frame DX image as PhysioNet ships VinDr-CXR (file named by image id)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.PatientName = generate_uid(), "DX", "Doe^Jane"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.uint16)).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_vindr_cxr_dicom_radiographs_with_boxes_per_reader(data_dir):
    root = data_dir / "vindr_cxr"
    lung = np.full((200, 160), 600, dtype=np.uint16)
    lung[40:80, 30:70] = 3000  # a bright (opaque) patch on the patient's right
    _radiograph(root / "train" / "aaa1.dicom", lung)
    _radiograph(root / "train" / "bbb2.dicom", 4095 - lung, photometric="MONOCHROME1")  # the same, stored inverted
    _radiograph(root / "train" / "ccc3.dicom", lung, burned_in=True)
    header = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
    _write_csv(
        root / "annotations" / "annotations_train.csv",
        header,
        [
            ["aaa1", "R1", "Nodule/Mass", 30, 40, 70, 80],
            ["aaa1", "R2", "Nodule/Mass", 31, 41, 69, 79],
            ["aaa1", "R3", "No finding", "", "", "", ""],
            ["bbb2", "R1", "Nodule/Mass", 30, 40, 70, 80],
            ["ccc3", "R1", "No finding", "", "", "", ""],
        ],
    )
    counts, manifest, records = _run("vindr_cxr")
    assert _rejects(manifest) == {"train/ccc3.dicom": "image flagged with burned-in annotation"}
    by_name = {r["source_relpath"]: r for r in records}
    plain, inverted = by_name["train/aaa1.dicom"], by_name["train/bbb2.dicom"]
    assert plain["image"]["bytes"] == inverted["image"]["bytes"]  # MONOCHROME1 turned the usual way round
    assert [roi["label"] for roi in plain["rois"]] == ["nodule or mass", "nodule or mass"]  # one per reader
    assert plain["rois"][0]["location"].startswith("right")
    assert "more opaque than the surrounding tissue" in plain["rois"][0]["texture"]
    assert "Doe^Jane" not in json.dumps([{k: v for k, v in r.items() if k != "image"} for r in records], default=str)
