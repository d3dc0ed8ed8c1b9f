"""MedTrinity pipeline: (image, regions of interest, multigranular description) triplets from
unpaired medical images. The library never imports Airflow; only ``stages.ray_runner`` and the
``vllm`` engine (``ray.data.llm``) import Ray."""

__version__ = "0.5.0"
PIPELINE_VERSION = __version__
