"""The sample expert: a small MONAI U-Net the project trains on its synthetic abdominal CT phantoms
(the ``synthetic_ct_abdomen`` sample source) and saves as a MONAI bundle, so that the demo and the
tests run real inference through the same bundle loader as production experts.

Training data are the pipeline's own records (slices, windowing and resizing exactly as the expert
will later see them), with the annotated lesions as targets. Phantom cases 0-7 train it; the
benchmark measures it on cases the training never saw.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.preprocess.images import decode_png
from medtrinity_tasks.roi import rle

SAMPLE_EXPERT = "synthetic_ct_lesions"
CHANNELS = {0: "background", 1: "liver tumour", 2: "renal cyst"}
INPUT_SIZE = 256
"""Images are resized to this for the network (0.75 mm pixels at 512 become 1.5 mm)."""
NETWORK = {
    "_target_": "monai.networks.nets.UNet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": len(CHANNELS),
    "channels": [8, 16, 32, 64],
    "strides": [2, 2, 2],
    "num_res_units": 1,
}
VERSION = "1.0.0"


def sample_slices(cases: int = 8, first_case: int = 0, seed: int = 7) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(images [N, 1, H, W] in 0..1, label maps [N, H, W], records) of the ``synthetic_ct_abdomen``
    source's pipeline records for phantom cases ``first_case`` onwards."""
    from medtrinity_tasks.preprocess.slicing import VolumeSlicer
    from medtrinity_tasks.roi.annotations import AnnotationRois
    from medtrinity_tasks.sources.catalog import get_source
    from medtrinity_tasks.sources.layouts import list_inputs
    from medtrinity_tasks.sources.readers.limits import InputLimits
    from medtrinity_tasks.sources.samples import write_ct_abdomen
    from medtrinity_tasks.stages import run_inprocess

    with tempfile.TemporaryDirectory(prefix="medtrinity-expert-") as workdir:
        write_ct_abdomen(Path(workdir), cases=cases, seed=seed, first_case=first_case)
        settings = load_settings().with_changes(samples_dir=Path(workdir))
        source = get_source("synthetic_ct_abdomen", settings)
        # annotated inputs only: the source's unlabelled test cases (imagesTs) have lesions but no targets,
        # and a slicer that keeps no slices of unannotated volumes (no expert follows) rejects them
        slicer = VolumeSlicer(
            source,
            root=source.location_path(settings),
            image_size=settings.image_size,
            min_image_side=settings.min_image_side,
            context_slices=settings.context_slices,
            unannotated_slices=0,
            limits=InputLimits.of(settings),
        )
        rows = run_inprocess([slicer, AnnotationRois(source)], list_inputs(source, settings))
    rows = [r for r in rows if r.get("label_relpath") and not (r.get("reject_reason") or r.get("quarantine_reasons"))]
    images = np.stack([decode_png(row["image"]["bytes"]) for row in rows])[:, None].astype(np.float32) / 255.0
    labels = np.stack([target(row) for row in rows])
    return images, labels, rows


def target(row: dict) -> np.ndarray:
    """The expert's label map of a record: each annotated ROI's mask as its channel number."""
    values = {name: value for value, name in CHANNELS.items()}
    labels = np.zeros((row["height"], row["width"]), np.int64)
    for roi in row["rois"]:
        if roi["label"] in values:
            labels[rle.decode(roi["mask_rle"])] = values[roi["label"]]
    return labels


def train_sample_expert(out: Path, steps: int = 500, seed: int = 0, progress=print) -> Path:
    """Train the sample expert and write it as a MONAI bundle at ``out``; returns ``out``."""
    import torch
    import torch.nn.functional as F
    from monai.bundle import ConfigParser
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels, _ = sample_slices()
    x = F.interpolate(torch.from_numpy(images), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    y = F.interpolate(torch.from_numpy(labels)[:, None].float(), size=(INPUT_SIZE, INPUT_SIZE), mode="nearest")
    network = ConfigParser({"network_def": NETWORK}).get_parsed_content("network_def")
    # background outnumbers lesions ~600 to 1: weigh the cross-entropy towards the lesions
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=torch.tensor([0.1, 1.0, 1.0]))
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    # every class in every batch: rare lesions (cysts are a few slices) are not drowned out
    by_class = [np.flatnonzero((y == value).flatten(1).any(1).numpy()) for value in CHANNELS if value]
    network.train()
    for step in range(steps):
        batch = np.concatenate([rng.choice(slices, size=3) for slices in by_class if len(slices)] +
                               [rng.choice(len(x), size=2)])  # fmt: skip
        optimiser.zero_grad()
        loss = loss_fn(network(x[batch]), y[batch])
        loss.backward()
        optimiser.step()
        if progress and (step + 1) % 50 == 0:
            progress(f"step {step + 1}/{steps}: loss {loss.item():.3f}")
    network.eval()
    write_bundle(out, network.state_dict(), training_slices=len(x), steps=steps)
    return out


def write_bundle(out: Path, state_dict: dict, training_slices: int, steps: int) -> None:
    """The MONAI bundle layout: configs (metadata, inference), the weights, and a README."""
    import torch

    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    (out / "docs").mkdir(exist_ok=True)
    metadata = {
        "name": SAMPLE_EXPERT,
        "version": VERSION,
        "changelog": {VERSION: "trained by `medtrinity experts train-sample`"},
        "task": "Segmentation of liver tumours and renal cysts on axial slices of the synthetic_ct_abdomen "
        "sample source",
        "description": "A small 2D U-Net trained on SYNTHETIC phantoms for pipeline demos and tests; "
        "not a medical model and not for use on patient data.",
        "authors": "medtrinity pipeline",
        "copyright": "CC0-1.0",
        "training": {"slices": training_slices, "steps": steps, "phantom_cases": "0-7"},
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "magnitude",
                    "modality": "CT",
                    "num_channels": 1,
                    "spatial_shape": [INPUT_SIZE, INPUT_SIZE],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "8-bit windowed slice / 255, radiological view"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(CHANNELS),
                    "spatial_shape": [INPUT_SIZE, INPUT_SIZE],
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {str(k): v for k, v in CHANNELS.items()},
                }
            },
        },
    }
    inference = {"network_def": NETWORK, "inferer": {"_target_": "SimpleInferer"}}
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
    torch.save(state_dict, out / "models" / "model.pt")
    (out / "docs" / "README.md").write_text(
        f"# {SAMPLE_EXPERT}\n\nA 2D MONAI U-Net that segments the liver tumours and renal cysts of the "
        "pipeline's SYNTHETIC CT phantoms. Trained by `medtrinity experts train-sample`; not a medical "
        "model.\n"
    )
