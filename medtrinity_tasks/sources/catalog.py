"""The source catalog: one YAML file per source under ``catalog/``, validated by a pydantic schema.

Locations may use environment variables (``${MEDTRINITY_SAMPLES_DIR}/...``); unset variables fall
back to the settings' defaults, so sample entries work with no configuration at all.
"""

from __future__ import annotations

import os
import string
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import MedtrinityError, SourceNotFound

CATALOG_DIR = Path(__file__).parent / "catalog"


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["organ", "lesion", "finding"]
    """organ: anatomy, for context; lesion: a region within an organ; finding: an image-level class
    or a boxed finding (with a disease, or without one for normal findings and tissue classes)."""
    organ: str | None = None
    """For lesions (required) and findings: the organ it belongs to."""
    disease: str | None = None
    """For lesions (required) and findings: the disease the annotation stands for."""
    source_name: str | None = None
    """The name the source's own files use (a CSV class, a folder), when it differs from ``name``."""


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")
    center: float
    width: float = Field(gt=0)


WINDOW_PRESETS = {
    "lung": Window(center=-600, width=1500),
    "soft_tissue": Window(center=40, width=400),
    "bone": Window(center=400, width=1800),
    "brain": Window(center=40, width=80),
}
"""CT display windows in HU, by name."""
REGION_WINDOWS = {"chest": "lung", "thorax": "lung", "lung": "lung", "head": "brain", "brain": "brain"}
"""The CT window a body region gets when its catalog entry names none; other regions: soft tissue."""


class Slicing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    axis: Literal["axial", "coronal", "sagittal"] = "axial"
    context_slices: int | None = Field(default=None, ge=0)
    """Slices without annotation kept per volume; unset uses MEDTRINITY_CONTEXT_SLICES."""


class ImageMaskLayout(BaseModel):
    """2D images with one mask image each (ISIC, Kvasir-SEG style): ``<masks_dir>/<image stem><mask_suffix>``."""

    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    masks_dir: str = "masks"
    mask_suffix: str = ".png"
    """What replaces the image's extension to name its mask, e.g. "_segmentation.png" for ISIC."""
    mask_values: Literal["binary", "labels"] = "binary"
    """binary: any pixel above 127 is label 1 (JPEG masks are noisy); labels: pixel values are labels."""


class TableLayout(BaseModel):
    """2D images annotated by a CSV table (NIH ChestX-ray14, VinDr-CXR, CheXpert style): class
    labels per image, boxes (one row per box), and text that comes with the image."""

    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    table: str
    """The CSV file, relative to the source directory."""
    image_column: str
    """File name of the image, relative to ``images_dir``."""
    label_column: str | None = None
    label_separator: str | None = None
    """Splits multi-label cells, e.g. "|" for "Effusion|Infiltration"."""
    box_columns: list[str] | None = Field(default=None, min_length=4, max_length=4)
    box_format: Literal["xywh", "xyxy"] = "xywh"
    text_column: str | None = None
    """Reports, captions or answers kept as the record's ``reference_text``."""


class CocoLayout(BaseModel):
    """2D images with a COCO JSON file of boxes (``images``, ``annotations``, ``categories``)."""

    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    annotations: str = "annotations.json"
    """The COCO JSON file, relative to the source directory."""


class FolderLayout(BaseModel):
    """2D images sorted into one folder per class (NCT-CRC-HE-100K style)."""

    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"


LAYOUTS = {
    "nifti": {"msd", "nnunet"},
    "dicom": {"series"},
    "image2d": {"image_mask", "image_table", "coco", "class_folders"},
}
"""The layouts each format may come in."""


class SourceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[a-z0-9_]+$")
    name: str
    homepage: str | None
    licence: str
    modality: str
    body_region: str
    format: Literal["nifti", "dicom", "image2d"]
    layout: Literal["msd", "nnunet", "series", "image_mask", "image_table", "coco", "class_folders"]
    image_mask: ImageMaskLayout = ImageMaskLayout()
    """Options of the image_mask layout."""
    table: TableLayout | None = None
    """Options of the image_table layout (required there)."""
    coco: CocoLayout = CocoLayout()
    """Options of the coco layout."""
    class_folders: FolderLayout = FolderLayout()
    """Options of the class_folders layout."""
    colour: bool = False
    """Keep RGB (dermoscopy, endoscopy, pathology); otherwise images are converted to grey."""
    patient_orientation: list[Literal["L", "R", "A", "P", "S", "I"]] | None = Field(
        default=None, min_length=2, max_length=2
    )
    """2D sources with a fixed projection: patient direction of +column and +row, e.g. ["L", "I"]
    for frontal chest radiographs. Unset: locations are given in the image's own words."""
    location: str
    labels: dict[int, Label]
    window: Window | Literal["lung", "soft_tissue", "bone", "brain"] | None = None
    """Display window in the image's units (HU for CT) or a preset's name. Unset: CT gets its body
    region's preset, other modalities scale each image to its 1st-99th percentile."""
    slicing: Slicing = Slicing()
    min_pass_rate: float | None = Field(default=None, ge=0, le=1)
    synthetic: bool = False

    @model_validator(mode="after")
    def _layout_fits_format(self) -> SourceEntry:
        if self.layout == "image_table" and self.table is None:
            raise ValueError("layout 'image_table' needs a `table:` section (table, image_column, ...)")
        if self.layout not in LAYOUTS[self.format]:
            raise ValueError(
                f"layout {self.layout!r} does not fit format {self.format!r} ({sorted(LAYOUTS[self.format])})"
            )
        return self

    @field_validator("labels")
    @classmethod
    def _lesions_name_their_organ(cls, labels: dict[int, Label]) -> dict[int, Label]:
        for value, label in labels.items():
            if value <= 0:
                raise ValueError(f"label values must be positive (0 is background), got {value}")
            if label.kind == "lesion" and not (label.organ and label.disease):
                raise ValueError(f"lesion label {label.name!r} needs an organ and a disease")
        return labels

    def label_named(self, name: str) -> Label | None:
        """The label a source's own files call ``name`` (its ``source_name``, else its ``name``)."""
        return next((label for label in self.labels.values() if name in (label.source_name, label.name)), None)

    def display_window(self) -> Window | None:
        if isinstance(self.window, str):
            return WINDOW_PRESETS[self.window]
        if self.window is None and self.modality == "CT":
            return WINDOW_PRESETS[REGION_WINDOWS.get(self.body_region, "soft_tissue")]
        return self.window

    def location_path(self, settings: Settings | None = None) -> Path:
        """The staged copy of the source, with environment variables expanded."""
        settings = settings or load_settings()
        env = {"MEDTRINITY_SAMPLES_DIR": str(settings.samples_dir), **os.environ}
        try:
            return Path(string.Template(self.location).substitute(env))
        except KeyError as missing:
            raise MedtrinityError(
                f"source {self.id}: location {self.location!r} uses {missing}, which is not set"
            ) from None


@lru_cache(maxsize=8)
def _load(catalog_dirs: tuple[Path, ...]) -> dict[str, SourceEntry]:
    entries: dict[str, SourceEntry] = {}
    for catalog_dir in catalog_dirs:
        if not catalog_dir.is_dir():
            raise MedtrinityError(f"catalog directory {catalog_dir} does not exist (MEDTRINITY_CATALOG_DIRS)")
        for path in sorted(catalog_dir.glob("*.yaml")):
            try:
                entry = SourceEntry.model_validate(yaml.safe_load(path.read_text()))
            except Exception as exc:
                raise MedtrinityError(f"catalog entry {path} is invalid: {exc}") from exc
            if entry.id != path.stem:
                raise MedtrinityError(f"catalog entry {path} has id {entry.id!r}; name the file {entry.id}.yaml")
            if entry.id in entries:
                raise MedtrinityError(f"catalog entry {path} repeats source id {entry.id!r}")
            entries[entry.id] = entry
    return entries


def load_catalog(settings: Settings | None = None) -> dict[str, SourceEntry]:
    """The shipped entries plus those in MEDTRINITY_CATALOG_DIRS (a site's own sources)."""
    settings = settings or load_settings()
    return dict(_load((CATALOG_DIR, *settings.catalog_dirs)))


def get_source(source_id: str, settings: Settings | None = None) -> SourceEntry:
    catalog = load_catalog(settings)
    if source_id not in catalog:
        known = ", ".join(sorted(catalog)) or "none"
        raise SourceNotFound(f"no source {source_id!r} in the catalog (known: {known})")
    return catalog[source_id]
