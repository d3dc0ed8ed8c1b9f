"""One small stage abstraction, in the spirit of NeMo Curator's ProcessingStage.

A stage transforms a batch of rows (dicts laid out as ``records.ROW_SCHEMA``). Runners call
``stage(batch)``, which hands only live rows to ``process_batch``: rows standing for rejected
inputs or quarantined records pass through untouched, and a batch that raises has its rows
quarantined with the error, so one bad batch never loses data or stops a shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtrinity_tasks.errors import InputRejected
from medtrinity_tasks.phi import project_logger
from medtrinity_tasks.reasons import Reason, quarantined, rejected

log = project_logger(__name__)  # de-identified log lines


def is_live(row: dict) -> bool:
    """Whether a stage should work on ``row``: it stands neither for a rejected input nor for a
    quarantined record."""
    return not (row.get("reject_reason") or row.get("quarantine_reasons"))


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int | None = None


class Stage:
    name: str = "stage"
    version: str = "1"
    resources: Resources = Resources()
    batch_size: int | None = None
    """Rows per ``process_batch`` call; None takes whatever block arrives, which lets Ray fuse a
    cheap stage into the stage before it without changing how that stage's work is split."""
    max_actors: int | None = None
    """The largest actor pool of a stage that runs as actors; None: the runner's default."""

    def setup(self) -> None:
        """Load models or open clients once per worker. Stages that override it run as Ray actors."""

    @property
    def needs_actor(self) -> bool:
        return type(self).setup is not Stage.setup or self.resources.gpus > 0

    def process_batch(self, rows: list[dict]) -> list[dict]:
        raise NotImplementedError

    def __call__(self, rows: list[dict]) -> list[dict]:
        live, parked = [], []
        for row in rows:
            (live if is_live(row) else parked).append(row)
        if not live:
            return parked
        try:
            out = self.process_batch(live)
        except Exception as exc:  # one failing batch is quarantined, never lost
            reason = Reason.of(f"{self.name} failed", f"{type(exc).__name__}: {exc}")
            log.warning("quarantining %d rows: %s", len(live), reason.text)
            out = [quarantined(row, [reason]) for row in live]
        return out + parked

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


class InputStage(Stage):
    """A first stage: turns each input row into record rows, or into one reject row with the reason
    its ``rows_for`` raised, so a bad file never costs its neighbours."""

    def rows_for(self, row: dict) -> list[dict]:
        raise NotImplementedError

    def process_batch(self, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            try:
                out.extend(self.rows_for(row))
            except InputRejected as reject:
                out.append(rejected(row, reject.reason))
        return out


class DatasetStage(Stage):
    """A stage that is a whole Ray Data transformation rather than a function of one batch (a
    ``ray.data.llm`` processor, which schedules its own steps and GPU actors). Only the Ray runner
    runs it: ``transform`` gets the live rows' Dataset and returns theirs, rows of ``ROW_SCHEMA``."""

    def transform(self, dataset):
        raise NotImplementedError
