"""The stages a shard runs, in order: the pipeline as one list, and the runner that runs it."""

from __future__ import annotations

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.generation.openai_engine import ChatConfig, OpenAIDescription
from medtrinity_tasks.generation.template import TemplateDescription
from medtrinity_tasks.generation.vllm_engine import VLLMConfig, VLLMDescription
from medtrinity_tasks.knowledge.index import KnowledgeConfig
from medtrinity_tasks.knowledge.retrieval import RetrieveKnowledge
from medtrinity_tasks.preprocess.captions import CoarseCaption
from medtrinity_tasks.preprocess.dicom_series import DicomSeriesSlicer
from medtrinity_tasks.preprocess.planar import PlanarImageLoader
from medtrinity_tasks.preprocess.slicing import VolumeSlicer
from medtrinity_tasks.roi.annotations import AnnotationRois
from medtrinity_tasks.roi.experts import DescribeRois, ExpertConfig, ExpertRois
from medtrinity_tasks.roi.registry import ExpertEntry, expert_for
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.deid import salt_for
from medtrinity_tasks.sources.layouts import LISTING_COLUMNS
from medtrinity_tasks.sources.readers.limits import InputLimits
from medtrinity_tasks.stages import Stage, check_columns, run_inprocess
from medtrinity_tasks.validation.judge import JudgeDescriptions

LOADERS = {
    "msd": VolumeSlicer,
    "nnunet": VolumeSlicer,
    "paired_files": VolumeSlicer,
    "series": DicomSeriesSlicer,
    "dicomweb": DicomSeriesSlicer,
    "image_mask": PlanarImageLoader,
    "image_table": PlanarImageLoader,
    "coco": PlanarImageLoader,
    "class_folders": PlanarImageLoader,
}
"""The first stage per source layout: input files -> 2D image rows with their label slices, or rejects."""


def build_stages(source: SourceEntry, settings: Settings, engine: str = "template") -> list[Stage]:
    """The source's stages for ``engine``, each given its own part of the settings; refused when a stage
    reads a column that neither the listing nor a stage before it writes."""
    if engine not in ENGINES:
        raise MedtrinityError(f"unknown description engine {engine!r}; available: {', '.join(ENGINES)}")
    expert = expert_for(source, settings)
    stages = [
        input_stage(source, settings, expert_follows=expert is not None),  # input files -> 2D images
        AnnotationRois(source),  # label slices -> described ROIs
        *(expert_stages(source, expert, settings) if expert else []),  # images without annotations -> ROIs
        CoarseCaption(source),  # metadata -> coarse caption
        *([retrieval_stage(settings)] if settings.knowledge_top_k else []),  # caption + ROIs -> passages
        description_stage(engine, settings),  # facts -> five-section description
        *([judge_stage(settings)] if settings.judge else []),  # description -> section scores (optional)
    ]
    check_columns(stages, LISTING_COLUMNS)
    return stages


def input_stage(source: SourceEntry, settings: Settings, *, expert_follows: bool) -> Stage:
    """The source's first stage (``LOADERS``). ``expert_follows``: an expert stage follows that labels images
    without annotations; such images are kept for it, or, where the entry's regions of interest are optional
    (``roi: optional``), as image-level records; otherwise they are rejected."""
    loader = LOADERS[source.layout]
    keep_unannotated = expert_follows or source.roi == "optional"
    given = dict(root=source.location_path(settings), image_size=settings.image_size, limits=InputLimits.of(settings))
    if loader is PlanarImageLoader:
        return PlanarImageLoader(source, **given, keep_unannotated=keep_unannotated)
    slicing = dict(
        given,
        min_image_side=settings.min_image_side,
        context_slices=settings.context_slices,
        unannotated_slices=settings.unannotated_slices if keep_unannotated else 0,
    )
    if loader is DicomSeriesSlicer:
        return DicomSeriesSlicer(source, salt=salt_for(source, settings), keep_unannotated=keep_unannotated, **slicing)
    return VolumeSlicer(source, **slicing)


def expert_stages(source: SourceEntry, expert: ExpertEntry, settings: Settings) -> list[Stage]:
    """The expert's masks of images without annotations (actors), then their regions described (on CPU)."""
    return [ExpertRois(source, expert, ExpertConfig.from_settings(expert, settings)), DescribeRois(source, expert)]


def retrieval_stage(settings: Settings) -> RetrieveKnowledge:
    knowledge = KnowledgeConfig.from_settings(settings)
    return RetrieveKnowledge(knowledge, top_k=settings.knowledge_top_k, tokens=settings.knowledge_tokens)


def description_stage(engine: str, settings: Settings) -> Stage:
    """The description stage of ``engine`` (``generation.ENGINES``)."""
    if engine == "openai":
        return OpenAIDescription(
            ChatConfig.from_settings(settings),
            knowledge_tokens=settings.knowledge_tokens,
            prompt_image=settings.prompt_image,
        )
    if engine == "vllm":
        return VLLMDescription(VLLMConfig.from_settings(settings))
    return TemplateDescription()


def judge_stage(settings: Settings) -> JudgeDescriptions:
    chat = ChatConfig.from_settings(settings)
    return JudgeDescriptions(chat, engine=settings.judge, min_score=settings.judge_min_score)


def run_stages(stages: list[Stage], rows: list[dict], settings: Settings) -> list[dict]:
    """The stages over the rows on the runner the settings name (Ray is imported only to run on it)."""
    if settings.runner == "inprocess":
        return run_inprocess(stages, rows)
    if settings.runner != "ray":
        raise MedtrinityError(f"MEDTRINITY_RUNNER must be 'ray' or 'inprocess', got {settings.runner!r}")
    from medtrinity_tasks.stages.ray_runner import run_ray

    return run_ray(stages, rows, settings)
