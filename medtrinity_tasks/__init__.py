"""MedTrinity pipeline: (image, regions of interest, multigranular description) triplets from
unpaired medical images. The library never imports Airflow; only ``stages.ray_runner`` imports Ray."""

__version__ = "0.2.0"
PIPELINE_VERSION = __version__
