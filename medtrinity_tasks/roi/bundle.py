"""MONAI bundles as ROI experts: a bundle directory is read the way MONAI's own tools read it, and
run with the inferer its config names (a sliding window for 3D), on CPU or GPU.

A bundle directory holds ``configs/metadata.json`` (``network_data_format``: the input's spatial
shape and channels, the output's ``channel_def`` naming each label), ``configs/inference.json``
(``network_def``, and optionally ``inferer``) and ``models/model.pt`` (the network's state dict).
Nothing is downloaded: a missing bundle is an error naming the directory and what belongs there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medtrinity_tasks.errors import ExpertUnavailable
from medtrinity_tasks.stages.base import Requirement

BUNDLE_FILES = ("configs/metadata.json", "configs/inference.json", "models/model.pt")
MONAI_REQUIRES = (
    Requirement("torch", "experts", ExpertUnavailable),
    Requirement("monai", "experts", ExpertUnavailable),
)
"""What loading and running a MONAI bundle imports, which only the experts extra installs."""


class MonaiBundle:
    """A loaded bundle: ``predict`` turns a batch of images into label maps of the same size."""

    def __init__(self, root: str | Path, device: str = "cpu"):
        self.root = Path(root)
        missing = [name for name in BUNDLE_FILES if not (self.root / name).is_file()]
        if missing:
            raise ExpertUnavailable(
                f"no MONAI bundle at {self.root}: {', '.join(missing)} missing. A bundle directory holds "
                "configs/metadata.json, configs/inference.json (network_def) and models/model.pt (the state "
                "dict); copy one there, or for the sample expert run `medtrinity experts train-sample`"
            )
        import torch
        from monai.bundle import ConfigParser
        from monai.inferers import SimpleInferer

        self.metadata = json.loads((self.root / "configs/metadata.json").read_text())
        parser = ConfigParser()
        parser.read_config(self.root / "configs/inference.json")
        parser["bundle_root"] = str(self.root)
        try:
            fmt = self.metadata["network_data_format"]
            self.input_shape = [int(n) for n in fmt["inputs"]["image"]["spatial_shape"]]
            self.patch_input = bool(fmt["inputs"]["image"].get("is_patch_data", False))
            channel_def = fmt["outputs"]["pred"]["channel_def"]
            self.network = parser.get_parsed_content("network_def")
            state = torch.load(self.root / "models/model.pt", map_location=device, weights_only=True)
            self.network.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ExpertUnavailable(f"MONAI bundle at {self.root} does not load: {type(exc).__name__}: {exc}") from None
        self.labels = {int(value): name for value, name in channel_def.items() if int(value) != 0}
        self.name = self.metadata.get("name", self.root.name)
        self.version = str(self.metadata.get("version", "unversioned"))
        self.device = torch.device(device)
        self.network.to(self.device).eval()
        self.inferer = parser.get_parsed_content("inferer") if "inferer" in parser else SimpleInferer()

    @property
    def spatial_dims(self) -> int:
        return len(self.input_shape)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Label maps (uint16, argmax over the output channels) for ``images`` shaped
        [N, channels, *spatial] in the bundle's input scale. A fixed-size (non-patch) network sees
        each image resized to its input shape; its scores are resized back before the argmax."""
        import torch
        import torch.nn.functional as F

        batch = torch.as_tensor(np.ascontiguousarray(images), dtype=torch.float32, device=self.device)
        size = tuple(batch.shape[2:])
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        resize = not self.patch_input and list(size) != self.input_shape
        with torch.inference_mode():
            if resize:
                batch = F.interpolate(batch, size=self.input_shape, mode=mode, align_corners=False)
            scores = self.inferer(batch, self.network)
            if resize:
                scores = F.interpolate(scores, size=size, mode=mode, align_corners=False)
        # max(...).indices is argmax; on CPU it is ten times faster than argmax over a non-last dim
        return scores.max(dim=1).indices.to(torch.uint16).cpu().numpy()
