"""ROI experts: the MONAI bundle loader (2D and 3D), the sample expert's real inference, the
registry, and the expert stage, in process and on a Ray actor pool, with failures that lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import ExpertUnavailable, MedtrinityError
from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.bundle import MonaiBundle
from medtrinity_tasks.roi.experts import DescribeRois, ExpertConfig, ExpertRois, undescribed
from medtrinity_tasks.roi.registry import expert_for, load_registry
from medtrinity_tasks.roi.training import CHANNELS, SAMPLE_EXPERT
from medtrinity_tasks.sources.catalog import get_source
from tests.support.experts import expert_rows, held_out_records

torch = pytest.importorskip("torch", reason="the experts extra: pip install 'medtrinity-tasks[experts]'")


@pytest.fixture(scope="module")
def held_out():
    return held_out_records()


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())


def test_the_shipped_sample_expert_finds_held_out_lesions(held_out):
    images, labels, _ = held_out
    model = MonaiBundle(load_settings().models_dir / SAMPLE_EXPERT)
    assert (model.name, model.labels) == (SAMPLE_EXPERT, {1: "liver tumour", 2: "renal cyst"})
    predicted = np.concatenate([model.predict(images[i : i + 8]) for i in range(0, len(images), 8)])
    assert predicted.shape == labels.shape and predicted.dtype == np.uint16
    for value in (1, 2):
        assert dice(predicted == value, labels == value) > 0.8, CHANNELS[value]


def test_a_missing_bundle_names_the_directory_and_what_belongs_there(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "metadata.json").write_text("{}")
    with pytest.raises(ExpertUnavailable) as error:
        MonaiBundle(tmp_path)
    assert str(tmp_path) in str(error.value)
    assert "configs/inference.json, models/model.pt missing" in str(error.value)


def test_a_3d_bundle_runs_with_its_sliding_window_inferer(tmp_path):
    from monai.bundle import ConfigParser

    network = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
               "channels": [4, 8], "strides": [2]}  # fmt: skip
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    roi = [16, 16, 16]
    metadata = {"name": "tiny3d", "version": "0.1", "network_data_format": {
        "inputs": {"image": {"spatial_shape": roi, "is_patch_data": True}},
        "outputs": {"pred": {"channel_def": {"0": "background", "1": "thing"}}}}}  # fmt: skip
    inference = {"network_def": network, "inferer": {"_target_": "SlidingWindowInferer", "roi_size": roi,
                                                     "sw_batch_size": 2, "overlap": 0.25}}  # fmt: skip
    (tmp_path / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(inference))
    torch.manual_seed(0)
    reference = ConfigParser({"network_def": network}).get_parsed_content("network_def").eval()
    torch.save(reference.state_dict(), tmp_path / "models" / "model.pt")

    model = MonaiBundle(tmp_path)
    assert model.spatial_dims == 3 and model.version == "0.1"
    volume = np.random.default_rng(0).random((1, 1, 16, 16, 16), dtype=np.float32)
    with torch.no_grad():  # one window covers the volume: the same as the network on its own
        expected = reference(torch.from_numpy(volume)).argmax(1).numpy()
    assert np.array_equal(model.predict(volume), expected)
    larger = model.predict(np.random.default_rng(1).random((1, 1, 24, 20, 40), dtype=np.float32))
    assert larger.shape == (1, 24, 20, 40)  # windows tiled over a volume larger than one window


def test_the_registry_picks_experts_by_modality_region_and_source(tmp_path):
    settings = load_settings()
    assert expert_for(get_source("synthetic_ct_abdomen"), settings).name == SAMPLE_EXPERT
    assert expert_for(get_source("kits19"), settings) is None  # CT abdomen, but not a synthetic source
    assert expert_for(get_source("synthetic_dermoscopy"), settings) is None
    site = tmp_path / "experts.yaml"
    site.write_text("experts:\n  - name: x\n    kind: monai_bundle\n    modality: CT\n")
    with pytest.raises(MedtrinityError, match=f"expert registry {site} is invalid: .*bundle"):
        load_registry(settings.with_changes(experts_file=site))


def test_a_missing_expert_bundle_fails_when_the_stage_is_built(tmp_path):
    settings = load_settings().with_changes(models_dir=tmp_path)
    source = get_source("synthetic_ct_abdomen")
    expert = expert_for(source, settings)
    with pytest.raises(ExpertUnavailable, match=f"no MONAI bundle at {tmp_path / SAMPLE_EXPERT}"):
        ExpertRois(source, expert, ExpertConfig.from_settings(expert, settings))


def stage() -> ExpertRois:
    settings = load_settings()
    source = get_source("synthetic_ct_abdomen")
    entry = expert_for(source, settings)
    expert = ExpertRois(source, entry, ExpertConfig.from_settings(entry, settings))
    expert.setup()
    return expert


def test_the_stage_labels_only_images_without_annotations(held_out):
    _, _, records = held_out
    annotated = next(r for r in records if r["rois"])
    unannotated = expert_rows(held_out, 1)[0]
    expert = stage()
    out = expert.process_batch([annotated, unannotated])
    assert out[0] is annotated  # annotations take precedence: untouched
    truth = {roi["label"] for roi in annotated["rois"]}
    assert {roi["label"] for roi in out[1]["rois"]} == truth
    assert all(roi["origin"] == f"expert {SAMPLE_EXPERT} 1.0.0" for roi in out[1]["rois"])
    assert all(undescribed(roi) for roi in out[1]["rois"])  # the actor leaves regions and words to the CPU stage
    described = DescribeRois(expert.source, expert.expert).process_batch(out)
    assert described[0] is annotated
    assert {roi["label"] for roi in described[1]["rois"]} == truth
    assert described[1]["diseases"] and described[1]["organ"] in ("liver", "kidney")
    for roi in described[1]["rois"]:
        within = next(found for found in out[1]["rois"] if found["label"] == roi["label"])
        assert not (rle.decode(roi["mask_rle"]) & ~rle.decode(within["mask_rle"])).any()  # a part of its label's mask
        assert roi["size"].endswith("mm") and roi["shape"] and roi["margin"] and roi["texture"]
        assert roi["location"].endswith(f"within the {expert.expert.label_named(roi['label']).organ}")


def test_out_of_memory_halves_the_batch_and_quarantines_only_what_cannot_fit(held_out, monkeypatch):
    from medtrinity_tasks.preprocess.images import decode_png

    expert = stage()
    rows = expert_rows(held_out, 4)
    too_big = decode_png(rows[2]["image"]["bytes"]).astype(np.float32) / 255.0  # does not fit even alone
    real_predict, sizes = expert.model.predict, []

    def tight_memory(images):
        sizes.append(len(images))
        if len(images) > 1 or np.array_equal(images[0, 0], too_big):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_predict(images)

    monkeypatch.setattr(expert.model, "predict", tight_memory)
    out = expert(rows)
    assert [row["id"] for row in out] == [row["id"] for row in rows]
    assert sizes == [4, 2, 1, 1, 2, 1, 1]  # halved until each image runs alone
    assert out[2]["quarantine_reasons"] == ["expert_rois failed: out of memory on a single image"]
    assert all(out[i]["rois"] and not out[i].get("quarantine_reasons") for i in (0, 1, 3))
