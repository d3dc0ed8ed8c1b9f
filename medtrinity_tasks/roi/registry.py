"""The expert registry: which ROI expert a source gets, by (modality, body region) and optionally by
source id, from a YAML file (``roi/experts.yaml``, or a site's own via MEDTRINITY_EXPERTS). Light on
purpose: the DAG files read it to put GPU experts' shard tasks in their Airflow pool."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.catalog import SourceEntry

DEFAULT_REGISTRY = Path(__file__).parent / "experts.yaml"


class ExpertLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    organ: str | None = None
    disease: str | None = None


class ExpertEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["monai_bundle"]
    bundle: str
    """A MONAI bundle directory: absolute, or relative to MEDTRINITY_MODELS_DIR."""
    modality: str
    body_regions: list[str]
    sources: list[str] | None = None
    """Only these sources (for models that must not meet other data); unset: any matching source."""
    labels: dict[int, ExpertLabel]
    """The bundle's output channels (background 0 left out), with organ and disease words."""

    def bundle_path(self, settings: Settings) -> Path:
        return settings.models_dir / self.bundle

    def label_named(self, name: str) -> ExpertLabel:
        """The expert's output label of this name, with its organ and disease words."""
        try:
            return next(label for label in self.labels.values() if label.name == name)
        except StopIteration:
            raise KeyError(f"expert {self.name} has no label named {name!r}") from None

    def matches(self, source: SourceEntry) -> bool:
        return self.covers(source.modality, source.body_region) and (self.sources is None or source.id in self.sources)

    def covers(self, modality: str, body_region: str) -> bool:
        """Whether the expert labels an image of this modality and region (a mixed DICOM source's images each
        name their own)."""
        return modality == self.modality and body_region in self.body_regions


def load_registry(settings: Settings) -> list[ExpertEntry]:
    path = settings.experts_file or DEFAULT_REGISTRY
    try:
        entries = yaml.safe_load(Path(path).read_text())["experts"]
        return [ExpertEntry.model_validate(entry) for entry in entries]
    except (OSError, KeyError, TypeError, yaml.YAMLError, ValidationError) as exc:
        raise MedtrinityError(f"expert registry {path} is invalid: {' '.join(str(exc).split())}") from None


def expert_for(source: SourceEntry, settings: Settings) -> ExpertEntry | None:
    return next((entry for entry in load_registry(settings) if entry.matches(source)), None)


def unannotated(row: dict) -> bool:
    """Whether the record's input came with no annotation at all (an annotated input's empty slice
    says "nothing here", which an expert must not overrule)."""
    return not (row.get("label_relpath") or row.get("annotation_boxes") or row.get("annotation_files"))
