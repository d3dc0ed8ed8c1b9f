"""The stage model: a Stage class and the runners that execute a plain list of stages."""

from medtrinity_tasks.stages.base import Resources, Stage
from medtrinity_tasks.stages.inprocess import run_inprocess

__all__ = ["Resources", "Stage", "run_inprocess"]
