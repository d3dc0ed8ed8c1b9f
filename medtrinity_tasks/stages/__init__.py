"""The stage model: a Stage class and the runners that execute a plain list of stages."""

from medtrinity_tasks.stages.base import Requirement, Resources, Stage, check_columns
from medtrinity_tasks.stages.inprocess import run_inprocess

__all__ = ["Requirement", "Resources", "Stage", "check_columns", "run_inprocess"]
