"""The Ray Data runner: each stage becomes one ``map_batches`` step of a streaming pipeline.

Stages with ``setup`` or GPUs run in an actor pool (the model loads once per actor); the others run
as stateless tasks. Rows travel as Arrow tables of ``records.ROW_SCHEMA``, so every block has the
same schema whichever stage produced it. A ``DatasetStage`` (a ``ray.data.llm`` processor) transforms
the live rows' Dataset as a whole; rows standing for rejects and quarantines go around it. Besides
the ``vllm`` engine's processor, this is the only module of the library that imports Ray.

An actor call costs Ray about 14 ms on a 2-core machine whatever its size (the block's ~90 Arrow
arrays serialised both ways, the task's bookkeeping), as much as a small model's forward pass over a
batch of 8 slices; so each actor call carries several of the stage's batches, about
ACTOR_CALL_ROWS rows, and the actor hands them to the stage one batch at a time: the batch stays
the unit of a forward pass and of quarantine.
"""

from __future__ import annotations

import logging
import sys
import warnings

import pyarrow as pa
import ray

from medtrinity_tasks.config import Settings
from medtrinity_tasks.records import ROW_SCHEMA, rows_to_table
from medtrinity_tasks.stages.base import DatasetStage, Stage, is_live


def ensure_ray(settings: Settings) -> None:
    """Join ``RAY_ADDRESS`` when set, else start a private local Ray once per process (never a
    cluster that happens to run on the machine)."""
    if ray.is_initialized():
        return
    ray.init(
        address=settings.ray_address or "local",
        num_cpus=None if settings.ray_address else settings.ray_num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = sys.stderr.isatty()  # live progress in a terminal, none in task logs
    # Per-operator reservations split a small cluster so that each step runs about one task at a
    # time; with it off, tasks fill every CPU (measured: 16 CPU-bound tasks on 2 CPUs, 1.07 s -> 0.56 s).
    context.op_resource_reservation_enabled = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset plans drown the progress lines


ACTOR_CALL_ROWS = 32
"""About how many rows one actor call carries (a whole number of the stage's batches)."""


def _rows_per_call(stage: Stage) -> int | None:
    """Rows per ``map_batches`` call of ``stage`` (None: whatever block arrives)."""
    if not stage.batch_size or not stage.needs_actor:
        return stage.batch_size
    return stage.batch_size * max(1, ACTOR_CALL_ROWS // stage.batch_size)


def _apply(batch: pa.Table, stage: Stage) -> pa.Table:
    return rows_to_table(stage(batch.to_pylist()))


def _as_rows(batch: pa.Table) -> pa.Table:
    return rows_to_table(batch.to_pylist())


def _around(stage: DatasetStage, ds: ray.data.Dataset) -> ray.data.Dataset:
    """``stage`` applied to the live rows, the others passed around it; upstream runs once."""
    ds = ds.materialize()
    with warnings.catch_warnings():  # "use expr": liveness reads two columns, one of them a list
        warnings.simplefilter("ignore", UserWarning)
        live = ds.filter(is_live)
        parked = ds.filter(lambda row: not is_live(row))
    return stage.transform(live).union(parked).map_batches(_as_rows, batch_format="pyarrow")


class _StageActor:
    """Holds one stage per actor so ``setup`` runs once per worker, not once per batch."""

    def __init__(self, stage: Stage):
        self.stage = stage
        stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows, size = batch.to_pylist(), self.stage.batch_size or batch.num_rows
        return rows_to_table([out for i in range(0, len(rows), size) for out in self.stage(rows[i : i + size])])


def run_ray(stages: list[Stage], rows: list[dict], settings: Settings, max_actors: int = 2) -> list[dict]:
    """Run ``stages`` over ``rows`` on Ray and return the resulting rows. Inputs go in blocks of the
    first stage's call size (one row where it takes whatever arrives): a finer split only adds
    Ray's cost per block."""
    ensure_ray(settings)
    if not rows:
        return []
    size = _rows_per_call(stages[0]) or 1
    ds = ray.data.from_arrow([rows_to_table(rows[i : i + size]) for i in range(0, len(rows), size)])
    for stage in stages:
        common = dict(
            batch_size=_rows_per_call(stage),
            batch_format="pyarrow",
            num_cpus=stage.resources.cpus,
            num_gpus=stage.resources.gpus or None,
            memory=stage.resources.memory_bytes,
        )
        if isinstance(stage, DatasetStage):
            ds = _around(stage, ds)
        elif stage.needs_actor:
            ds = ds.map_batches(
                _StageActor,
                fn_constructor_args=(stage,),
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=stage.max_actors or max_actors),
                **common,
            )
        else:
            ds = ds.map_batches(_apply, fn_args=(stage,), **common)
    tables = [table for table in ray.get(ds.to_arrow_refs()) if table.num_rows]
    return pa.concat_tables(tables).cast(ROW_SCHEMA).to_pylist() if tables else []
