"""The in-process runner: the same stage list, no Ray. For tests, debugging and tiny inputs."""

from __future__ import annotations

from medtrinity_tasks.stages.base import Stage


def run_inprocess(stages: list[Stage], rows: list[dict]) -> list[dict]:
    for stage in stages:
        stage.setup()
        size = stage.batch_size or max(len(rows), 1)
        out: list[dict] = []
        for start in range(0, len(rows), size):
            out.extend(stage(rows[start : start + size]))
        rows = out
    return rows
