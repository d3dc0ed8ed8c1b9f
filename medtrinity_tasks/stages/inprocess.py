"""The in-process runner: the same stage list, no Ray. For tests, debugging and tiny inputs."""

from __future__ import annotations

from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.stages.base import DatasetStage, Stage


def run_inprocess(stages: list[Stage], rows: list[dict]) -> list[dict]:
    for stage in stages:
        if isinstance(stage, DatasetStage):
            raise MedtrinityError(f"stage {stage.name} is a Ray Data transformation: set MEDTRINITY_RUNNER=ray")
        stage.setup()
        size = stage.batch_size or max(len(rows), 1)
        out: list[dict] = []
        for start in range(0, len(rows), size):
            out.extend(stage(rows[start : start + size]))
        rows = out
    return rows
