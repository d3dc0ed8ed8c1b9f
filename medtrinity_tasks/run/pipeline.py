"""The stages a shard runs, in order: the pipeline as one list, and the runner that runs it."""

from __future__ import annotations

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.generation.openai_engine import OpenAIDescription
from medtrinity_tasks.generation.template import TemplateDescription
from medtrinity_tasks.generation.vllm_engine import VLLMDescription
from medtrinity_tasks.knowledge.retrieval import RetrieveKnowledge
from medtrinity_tasks.preprocess.captions import CoarseCaption
from medtrinity_tasks.preprocess.dicom_series import DicomSeriesSlicer
from medtrinity_tasks.preprocess.planar import PlanarImageLoader
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.roi.experts import DescribeRois, ExpertRois
from medtrinity_tasks.roi.registry import expert_for
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.stages import Stage, run_inprocess
from medtrinity_tasks.validation.judge import JudgeDescriptions

LOADERS = {
    "msd": VolumeSlicer,
    "nnunet": VolumeSlicer,
    "paired_files": VolumeSlicer,
    "series": DicomSeriesSlicer,
    "image_mask": PlanarImageLoader,
    "image_table": PlanarImageLoader,
    "coco": PlanarImageLoader,
    "class_folders": PlanarImageLoader,
}
"""The first stage per source layout: input files -> 2D image rows with their label slices, or rejects."""


DESCRIBERS = {"template": TemplateDescription, "openai": OpenAIDescription, "vllm": VLLMDescription}
"""The description stage per engine name (``generation.ENGINES``)."""


def build_stages(source: SourceEntry, settings: Settings, engine: str = "template") -> list[Stage]:
    if engine not in DESCRIBERS:
        raise MedtrinityError(f"unknown description engine {engine!r}; available: {', '.join(ENGINES)}")
    expert = expert_for(source, settings)
    return [
        LOADERS[source.layout](source, settings, expert_follows=expert is not None),  # input files -> 2D images
        AnnotationRois(source),  # label slices -> described ROIs
        *([ExpertRois(source, expert, settings)] if expert else []),  # images without annotations -> masks
        *([DescribeRois(source, expert)] if expert else []),  # the experts' masks -> described ROIs (CPU)
        CoarseCaption(source),  # metadata -> coarse caption
        *([RetrieveKnowledge(settings)] if settings.knowledge_top_k else []),  # caption + ROIs -> passages
        DESCRIBERS[engine](settings),  # facts -> five-section description
        *([JudgeDescriptions(settings)] if settings.judge else []),  # description -> section scores (optional)
    ]


def run_stages(stages: list[Stage], rows: list[dict], settings: Settings) -> list[dict]:
    """The stages over the rows on the runner the settings name (Ray is imported only to run on it)."""
    if settings.runner == "inprocess":
        return run_inprocess(stages, rows)
    if settings.runner != "ray":
        raise MedtrinityError(f"MEDTRINITY_RUNNER must be 'ray' or 'inprocess', got {settings.runner!r}")
    from medtrinity_tasks.stages.ray_runner import run_ray

    return run_ray(stages, rows, settings)
