"""Training the sample expert from the pipeline's own records writes a bundle the loader reads."""

from __future__ import annotations

import json

import pytest

from medtrinity_tasks.roi.bundle import MonaiBundle
from medtrinity_tasks.roi.training import train_sample_expert

torch = pytest.importorskip("torch", reason="the experts extra: pip install 'medtrinity-tasks[experts]'")


def test_train_sample_writes_a_bundle_the_loader_reads(tmp_path):
    train_sample_expert(tmp_path / "bundle", steps=2, progress=None)
    model = MonaiBundle(tmp_path / "bundle")
    metadata = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert metadata["training"]["steps"] == 2 and model.labels == {1: "liver tumour", 2: "renal cyst"}
    assert (tmp_path / "bundle" / "docs" / "README.md").is_file()
