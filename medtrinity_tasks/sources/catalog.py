"""The source catalog: one YAML file per source under ``catalog/``, validated by a pydantic schema.

Locations may use environment variables (``${MEDTRINITY_SAMPLES_DIR}/...``); unset variables fall
back to the settings' defaults, so sample entries work with no configuration at all.
"""

from __future__ import annotations

import os
import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    source_name: str | list[str] | None = None
    """The name the source's own files use (a CSV class, a folder), when it differs from ``name``;
    a list where its files spell it several ways (NIH: "Infiltration" and "Infiltrate")."""

    def names(self) -> list[str]:
        """Every name the source's files may use for this label."""
        spelled = [self.source_name] if isinstance(self.source_name, str) else self.source_name or []
        return [*spelled, self.name]


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


class TableFile(BaseModel):
    """One CSV of an image_table layout: which column names the image, and which hold its labels,
    boxes or text. A source may have several (NIH ChestX-ray14: findings in one, boxes in another)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    """The CSV file, relative to the source directory."""
    image_column: str
    """The image's path relative to ``images_dir`` (after ``image_suffix`` and ``image_rewrite``)."""
    image_suffix: str = ""
    """Appended to the image cell, for tables that name images without extension (ISIC: ".jpg")."""
    image_rewrite: tuple[str, str] | None = None
    """A regular expression and its replacement turning the cell into a path, e.g. DeepLesion's
    ``000001_01_01_109.png`` into ``000001_01_01/109.png``: ["^(.+)_(\\d+\\.png)$", "\\1/\\2"]."""
    label_column: str | None = None
    """One column naming the label(s), e.g. "Finding Labels"."""
    label_separator: str | None = None
    """Splits multi-label cells, e.g. "|" for "Effusion|Infiltration"."""
    label_columns: list[str] | None = None
    """One column per label (one-hot, CheXpert style); a cell in ``positive_values`` sets it."""
    positive_values: list[str] = ["1", "1.0"]
    box_columns: list[str] | None = None
    """Four columns (x, y, w, h or x0, y0, x1, y1), or one column holding the four numbers "a, b, c, d"."""
    box_format: Literal["xywh", "xyxy"] = "xywh"
    text_columns: list[str] = []
    """Reports, captions or question-answer columns kept as the record's ``reference_text``: one
    column is taken as it is; several are written "column: value" (e.g. "question: ... answer:
    ..."); an image's distinct texts over all its rows are kept, one per line."""
    delimiter: str = ","

    @model_validator(mode="after")
    def _boxes_are_four_numbers(self) -> TableFile:
        if self.box_columns is not None and len(self.box_columns) not in (1, 4):
            raise ValueError("box_columns names four columns, or one column holding four numbers")
        if self.image_rewrite is not None:
            re.compile(self.image_rewrite[0])
        return self


class TableLayout(BaseModel):
    """2D images annotated by CSV tables (NIH ChestX-ray14, CheXpert, DeepLesion style): class
    labels per image, boxes (one row per box), and text that comes with the image. Images under
    ``images_dir`` that no table lists are rejected, so every file is accounted for."""

    model_config = ConfigDict(extra="forbid")
    images_dir: str = "images"
    files: list[TableFile] = Field(min_length=1)


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


class PairedFilesLayout(BaseModel):
    """Volumes found by a regular expression over their paths, each with the label file its named
    groups point to: the case-folder and flat layouts of KiTS, BraTS, LiTS or FLARE, e.g.
    ``data/(?P<case>case_\\d{5})/imaging\\.nii\\.gz`` with ``data/{case}/segmentation.nii.gz``.
    A group named ``channel`` names the image's channel (looked up in the entry's ``channels``)."""

    model_config = ConfigDict(extra="forbid")
    image_pattern: str
    """Matched against the whole path relative to the source directory, with "/" separators."""
    label_path: str
    """The image's label file, formatted with the pattern's named groups."""

    @model_validator(mode="after")
    def _label_path_uses_pattern_groups(self) -> PairedFilesLayout:
        try:
            groups = set(re.compile(self.image_pattern).groupindex)
        except re.error as exc:
            raise ValueError(f"image_pattern is not a regular expression: {exc}") from None
        used = {name for _, name, _, _ in string.Formatter().parse(self.label_path) if name}
        if used - groups:
            raise ValueError(f"label_path uses {sorted(used - groups)}, which image_pattern does not name")
        return self


class Cine(BaseModel):
    """How the frames of a multi-frame 2D object (ultrasound or angiography cine) become images."""

    model_config = ConfigDict(extra="forbid")
    frames: int = Field(default=4, ge=1)
    """Frames kept per cine object, evenly spaced from the first to the last (all of them when it has fewer)."""


class DicomwebLayout(BaseModel):
    """Studies on a DICOMweb server (a PACS, Orthanc, dcm4chee): searched with QIDO-RS, retrieved with WADO-RS
    into the source's mirror under MEDTRINITY_CACHE_DIR, then grouped into series as files are. The entry's
    ``location`` is the service's base URL (``http://pacs:8042/dicom-web``); credentials come from the
    MEDTRINITY_DICOMWEB_* settings."""

    model_config = ConfigDict(extra="forbid")
    study_filters: dict[str, str] = {}
    """QIDO-RS search keys for studies, e.g. {"ModalitiesInStudy": "CT", "StudyDate": "20200101-20201231"}."""
    series_filters: dict[str, str] = {}
    """QIDO-RS search keys for the series of each study, e.g. {"Modality": "CT"}."""
    page_size: int = Field(default=100, ge=1)
    """Results per QIDO-RS page (``limit`` and ``offset``): studies, a study's series, a series' instances."""


LAYOUTS = {
    "nifti": {"msd", "nnunet", "paired_files"},
    "dicom": {"series", "image_table", "dicomweb"},
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
    """The images' modality (DICOM code: CT, MR, CR, DX, US...). A DICOM object's own Modality overrides it."""
    modalities: list[str] | None = None
    """DICOM sources: the modalities kept; objects of others are rejected with the reason. Unset: all."""
    body_region: str
    """What the images show (abdomen, chest, head...). A DICOM object's own BodyPartExamined overrides it."""
    format: Literal["nifti", "dicom", "image2d"]
    layout: Literal[
        "msd", "nnunet", "paired_files", "series", "dicomweb", "image_mask", "image_table", "coco", "class_folders"
    ]
    roi: Literal["required", "optional"] = "optional"
    """Images with no annotation that no expert labels: ``optional`` keeps them as records with image-level
    facts and no region of interest; ``required`` rejects them with the reason."""
    cine: Cine = Cine()
    """DICOM multi-frame 2D objects (ultrasound, angiography cine): which frames become images."""
    dicomweb: DicomwebLayout = DicomwebLayout()
    """Options of the dicomweb layout."""
    image_mask: ImageMaskLayout = ImageMaskLayout()
    """Options of the image_mask layout."""
    table: TableLayout | None = None
    """Options of the image_table layout (required there)."""
    coco: CocoLayout = CocoLayout()
    """Options of the coco layout."""
    class_folders: FolderLayout = FolderLayout()
    """Options of the class_folders layout."""
    paired_files: PairedFilesLayout | None = None
    """Options of the paired_files layout (required there)."""
    channels: dict[str, str] | None = None
    """Names of image channels (MR sequences), by the key the source uses: the 4th-dimension index of
    a 4D NIfTI (Decathlon BrainTumour: {0: FLAIR, 1: T1w, ...}; every channel is sliced), the nnU-Net
    channel number, or the ``channel`` group of a paired_files pattern."""
    rescale_intercept: float = 0.0
    """Added to stored 2D pixel values to give the modality's units: -32768 turns DeepLesion's
    16-bit PNGs into HU. (DICOM and NIfTI carry their own rescale.)"""
    colour: bool = False
    """Keep RGB (dermoscopy, endoscopy, pathology); otherwise images are converted to grey."""
    patient_orientation: list[Literal["L", "R", "A", "P", "S", "I"]] | None = Field(
        default=None, min_length=2, max_length=2
    )
    """2D sources with a fixed projection: patient direction of +column and +row, e.g. ["L", "I"]
    for frontal chest radiographs. Unset: locations are given in the image's own words."""
    location: str
    """A local directory or s3://bucket/prefix; environment variables are expanded. A local one
    must lie (symbolic links resolved) below MEDTRINITY_DATA_DIR or MEDTRINITY_SAMPLES_DIR."""
    allow_outside_data_dir: bool = False
    """Let a local ``location`` lie elsewhere (a site's own staging disk): a catalog file otherwise
    cannot point the pipeline at the rest of the machine. "/" and relative locations stay refused."""
    labels: dict[int, Label]
    window: Window | Literal["lung", "soft_tissue", "bone", "brain"] | None = None
    """Display window in the image's units (HU for CT) or a preset's name. Unset: CT gets its body
    region's preset, other modalities scale each image to its 1st-99th percentile."""
    slicing: Slicing = Slicing()
    min_pass_rate: float | None = Field(default=None, ge=0, le=1)
    schedule: str | None = None
    """An Airflow schedule (cron or preset such as "@weekly") for sources that grow over time; such
    a source's DAG also takes `airflow backfill create`. Unset: runs are triggered."""
    synthetic: bool = False

    @model_validator(mode="after")
    def _layout_fits_format(self) -> SourceEntry:
        if self.layout == "image_table" and self.table is None:
            raise ValueError("layout 'image_table' needs a `table:` section (images_dir, files)")
        if self.layout == "paired_files" and self.paired_files is None:
            raise ValueError("layout 'paired_files' needs a `paired_files:` section (image_pattern, label_path)")
        if (self.layout == "dicomweb") != self.location.startswith(("http://", "https://")):
            raise ValueError("layout 'dicomweb' and only it takes an http(s) location (the DICOMweb base URL)")
        if self.layout not in LAYOUTS[self.format]:
            raise ValueError(
                f"layout {self.layout!r} does not fit format {self.format!r} ({sorted(LAYOUTS[self.format])})"
            )
        return self

    @field_validator("channels", mode="before")
    @classmethod
    def _channel_keys_are_text(cls, channels: dict | None) -> dict | None:
        return {str(key): value for key, value in channels.items()} if isinstance(channels, dict) else channels

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
        return next((label for label in self.labels.values() if name in label.names()), None)

    def roi_values(self) -> list[int]:
        """Label values whose regions are the records' regions of interest: lesions and findings,
        with organs as context; a source that annotates organs only (Decathlon Spleen, FLARE) has
        its organs as regions of interest."""
        targets = [value for value, label in self.labels.items() if label.kind != "organ"]
        return sorted(targets or self.labels)

    def display_window(self, modality: str | None = None, body_region: str | None = None) -> Window | None:
        """The window of an image of ``modality`` showing ``body_region`` (the entry's own by default)."""
        if isinstance(self.window, str):
            return WINDOW_PRESETS[self.window]
        if self.window is None and (modality or self.modality) == "CT":
            return WINDOW_PRESETS[REGION_WINDOWS.get(body_region or self.body_region, "soft_tissue")]
        return self.window

    def location_uri(self, settings: Settings | None = None) -> str:
        """Where the source is staged, environment variables expanded: a path or s3://bucket/prefix."""
        settings = settings or load_settings()
        env = {**os.environ, "MEDTRINITY_SAMPLES_DIR": str(settings.samples_dir)}
        try:
            return string.Template(self.location).substitute(env)
        except KeyError as missing:
            raise MedtrinityError(
                f"source {self.id}: location {self.location!r} uses {missing}, which is not set; "
                "set it to the directory where the source is staged"
            ) from None

    def location_path(self, settings: Settings | None = None) -> Path:
        """The local directory the pipeline reads: the staged copy, or for a source staged on S3 or served
        over DICOMweb its mirror under MEDTRINITY_CACHE_DIR (kept in step by every listing of the source)."""
        settings = settings or load_settings()
        uri = self.location_uri(settings)
        if uri.startswith(("s3://", "http://", "https://")):
            return settings.cache_dir / "sources" / self.id
        return self._allowed_location(Path(uri), settings)

    def _allowed_location(self, path: Path, settings: Settings) -> Path:
        """``path`` unless it is relative, the file system's root, or (without
        ``allow_outside_data_dir``) resolves outside MEDTRINITY_DATA_DIR and MEDTRINITY_SAMPLES_DIR."""
        where = f"source {self.id}: location {str(path)!r}"
        if not path.is_absolute():
            raise MedtrinityError(
                f"{where} is relative; give an absolute path, e.g. ${{MEDTRINITY_DATA_DIR}}/{self.id}"
            )
        try:
            real = path.resolve()
        except (OSError, RuntimeError):
            raise MedtrinityError(f"{where} cannot be resolved: a symbolic link on the way loops") from None
        if real == Path(real.anchor):
            raise MedtrinityError(f"{where} is the file system's root; stage the source in a directory of its own")
        allowed = [root.resolve() for root in (settings.allowed_root, settings.samples_dir) if root]
        if self.allow_outside_data_dir or any(real.is_relative_to(root) for root in allowed):
            return path
        resolved = f" (resolving to {real})" if real != path else ""
        raise MedtrinityError(
            f"{where}{resolved} lies outside MEDTRINITY_DATA_DIR ({settings.allowed_root or 'not set'}) and "
            f"MEDTRINITY_SAMPLES_DIR ({settings.samples_dir}): stage the source below MEDTRINITY_DATA_DIR, "
            "set MEDTRINITY_DATA_DIR to a directory above it, or set allow_outside_data_dir: true in its entry"
        )


@lru_cache(maxsize=8)
def _load(catalog_dirs: tuple[Path, ...]) -> tuple[dict[str, SourceEntry], dict[str, str]]:
    """(valid entries by id, problem by YAML path): one broken entry leaves the others usable."""
    entries: dict[str, SourceEntry] = {}
    problems: dict[str, str] = {}
    for catalog_dir in catalog_dirs:
        if not catalog_dir.is_dir():
            raise MedtrinityError(f"catalog directory {catalog_dir} does not exist (MEDTRINITY_CATALOG_DIRS)")
        for path in sorted(catalog_dir.glob("*.yaml")):
            try:
                entry = SourceEntry.model_validate(yaml.safe_load(path.read_text()))
            except ValidationError as exc:
                fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
                problems[str(path)] = f"catalog entry {path} is invalid: {fields}"
            except (OSError, yaml.YAMLError) as exc:
                problems[str(path)] = f"catalog entry {path} cannot be read: {' '.join(str(exc).split())}"
            else:
                if entry.id != path.stem:
                    problems[str(path)] = f"catalog entry {path} has id {entry.id!r}; name the file {entry.id}.yaml"
                elif entry.id in entries:
                    problems[str(path)] = f"catalog entry {path} repeats source id {entry.id!r}"
                else:
                    entries[entry.id] = entry
    return entries, problems


def _catalog_dirs(settings: Settings | None) -> tuple[Path, ...]:
    return (CATALOG_DIR, *(settings or load_settings()).catalog_dirs)


def load_catalog(settings: Settings | None = None) -> dict[str, SourceEntry]:
    """The valid shipped entries plus those in MEDTRINITY_CATALOG_DIRS (a site's own sources)."""
    return dict(_load(_catalog_dirs(settings))[0])


def catalog_problems(settings: Settings | None = None) -> dict[str, str]:
    """Why each invalid catalog file was left out, by path: the field and what is wrong with it."""
    return dict(_load(_catalog_dirs(settings))[1])


def get_source(source_id: str, settings: Settings | None = None) -> SourceEntry:
    entries, problems = _load(_catalog_dirs(settings))
    if source_id in entries:
        return entries[source_id]
    for path, problem in problems.items():
        if Path(path).stem == source_id:
            raise MedtrinityError(problem)
    known = ", ".join(sorted(entries)) or "none"
    raise SourceNotFound(f"no source {source_id!r} in the catalog (known: {known})")
