"""One small stage abstraction, in the spirit of NeMo Curator's ProcessingStage.

A stage transforms a batch of rows (dicts laid out as ``records.ROW_SCHEMA``). Runners call
``stage(batch)``, which hands only live rows to ``process_batch``: rows standing for rejected
inputs or quarantined records pass through untouched, and a batch that raises has its rows
quarantined with the error, so one bad batch never loses data or stops a shard.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medtrinity_tasks.errors import InputRejected, MedtrinityError
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


@dataclass(frozen=True)
class Requirement:
    """A module that only one of the package's pip extras installs, as a stage (or a tool) needs it."""

    module: str
    """The top-level import name, e.g. ``sentence_transformers``."""
    extra: str
    """The extra of ``medtrinity-tasks`` that installs it."""
    unavailable: type[MedtrinityError] = MedtrinityError
    """The error its absence raises: the one the stage's callers already catch (``ExpertUnavailable``, ...)."""
    shown: str | None = None
    """Its name as its users write it (``vLLM``, ``sentence-transformers``), where that is not ``module``."""

    @property
    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None  # found, not imported: torch takes seconds


def require(needer: str, requirements: Iterable[Requirement]) -> None:
    """Raise, in one line that names what is missing and the pip extra that brings it, unless every
    requirement is installed: ``expert_rois needs torch and monai, which are not installed: pip install
    'medtrinity-tasks[experts]'``."""
    missing = [requirement for requirement in requirements if not requirement.installed]
    if not missing:
        return
    names = [requirement.shown or requirement.module for requirement in missing]
    named = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    extras = ",".join(sorted({requirement.extra for requirement in missing}))
    verb = "is" if len(missing) == 1 else "are"
    raise missing[0].unavailable(
        f"{needer} needs {named}, which {verb} not installed: pip install 'medtrinity-tasks[{extras}]'"
    )


class _StageType(type):
    """Checks a stage's ``requires`` once, when the stage is built: a missing extra fails before any
    work, and a worker unpickling the stage does not check it again."""

    def __call__(cls, *args, **kwargs):
        cls.check_requirements()
        return super().__call__(*args, **kwargs)


class Stage(metaclass=_StageType):
    name: str = "stage"
    version: str = "1"
    reads: tuple[str, ...] = ()
    """The ``ROW_SCHEMA`` columns it needs written before it, by the listing or an earlier stage."""
    reads_if_present: tuple[str, ...] = ()
    """Columns it uses where an earlier stage wrote them (a run without retrieval carries no passages)."""
    writes: tuple[str, ...] = ()
    """The columns it adds or changes. Reject and quarantine reasons are no stage's contract: any stage may
    set them, and the base class reads them to pass such rows around every stage."""
    requires: tuple[Requirement, ...] = ()
    """The modules it imports that only a pip extra installs."""
    resources: Resources = Resources()
    batch_size: int | None = None
    """Rows per ``process_batch`` call; None takes whatever block arrives, which lets Ray fuse a
    cheap stage into the stage before it without changing how that stage's work is split."""
    max_actors: int | None = None
    """The largest actor pool of a stage that runs as actors; None: the runner's default."""

    @classmethod
    def check_requirements(cls) -> None:
        """Fail, naming the pip extra, if a module the stage needs is not installed."""
        require(cls.name, cls.requires)

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


def check_columns(stages: Sequence[Stage], listed: Iterable[str]) -> None:
    """Refuse a stage list in which a stage reads a column that neither the listing (``listed``)
    nor a stage before it writes: the list is in the wrong order, or a stage is missing."""
    written = set(listed)
    for stage in stages:
        missing = [column for column in stage.reads if column not in written]
        if missing:
            raise MedtrinityError(
                f"stage {stage.name} reads {', '.join(missing)}, which neither the listing nor a stage before it writes"
            )
        written.update(stage.writes)


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
