"""``synthetic_ct_abdomen``: CT-like phantoms in the Medical Segmentation Decathlon layout. Lesions have known
size and position in known organs, and each case is stored with a different, non-trivial affine (flipped axes,
offsets, anisotropic voxels), so orientation handling is exercised end to end. ``ground_truth.json`` lists every
lesion in patient terms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtrinity_tasks.sources.samples.phantom import LABELS, ORIENTATIONS, case_affine, case_lesions, fresh, phantom

CT_SOURCE_ID = "synthetic_ct_abdomen"


UNLABELLED_CASES = 2
"""Cases written without labels, in imagesTs/, for the sample expert."""


def write_ct_abdomen(out: Path, cases: int = 8, seed: int = 7, bad_inputs: bool = False, first_case: int = 0) -> Path:
    """Write the abdominal CT phantom source under ``out/synthetic_ct_abdomen`` and return that directory.

    Lesion sizes and places, and the stored orientation, follow the case number: ``first_case``
    gives a held-out set other layouts (the sample expert trains on cases 0-7).

    ``bad_inputs`` adds four broken cases (truncated file, mismatched mask, empty mask, a text file
    with a .nii.gz name) so that rejection and accounting can be seen and tested.
    """
    import nibabel as nib

    root = fresh(Path(out) / CT_SOURCE_ID)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    (root / "imagesTs").mkdir()  # the last UNLABELLED_CASES, as the Decathlon's test images: the expert labels them
    training, test, truth = [], [], {}
    for case in range(first_case, first_case + cases + UNLABELLED_CASES):
        name = f"phantom_{case:03d}.nii.gz"
        orientation = ORIENTATIONS[case % len(ORIENTATIONS)]
        affine = case_affine(orientation, case)
        lesions = case_lesions(case)
        hu, labels = phantom(affine, lesions, rng)
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


def _write_bad_inputs(root: Path, rng: np.random.Generator) -> list[dict]:
    import nibabel as nib

    affine = case_affine("RAS", 0)
    hu, labels = phantom(affine, case_lesions(0), rng)
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
