"""The two runners execute the same stage list with the same results, including failures."""

import os
import sys

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.pipeline import build_stages, list_inputs
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.stages import Resources, Stage, run_inprocess


class CountSetups(Stage):
    """Records which process ran ``setup``, to show it runs once per actor, not per batch."""

    name = "count_setups"
    batch_size = 2

    def setup(self):
        self.pid = os.getpid()

    def process_batch(self, rows):
        return [dict(row, organ=f"setup-pid-{self.pid}") for row in rows]


class Explodes(Stage):
    name = "explodes"
    resources = Resources(cpus=0.5)
    batch_size = 2

    def process_batch(self, rows):
        if any(row["source_relpath"].endswith("1") for row in rows):
            raise ValueError("model crashed")
        return rows


ROWS = [{"source_id": "t", "source_relpath": f"in/{i}"} for i in range(6)]


def test_stage_with_setup_runs_in_an_actor_pool_and_without_as_tasks():
    assert CountSetups().needs_actor
    assert not Explodes().needs_actor
    assert type("GpuStage", (Stage,), {"resources": Resources(gpus=1)})().needs_actor


def test_failing_batch_is_quarantined_and_the_rest_goes_on():
    out = run_inprocess([Explodes()], ROWS)
    assert len(out) == 6
    failed = sorted(r["source_relpath"] for r in out if r.get("quarantine_reasons"))
    assert failed == ["in/0", "in/1"]  # the whole batch of the failing row, with the reason
    assert out[0]["quarantine_reasons"] == ["explodes failed: ValueError: model crashed"]


def test_parked_rows_skip_later_stages():
    rows = [dict(ROWS[0], reject_reason="unreadable"), ROWS[1]]
    out = run_inprocess([CountSetups()], rows)
    assert {r["source_relpath"]: r.get("organ") for r in out}["in/0"] is None


@pytest.mark.slow
def test_ray_runner_matches_in_process_runner(samples_dir, settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

    settings = load_settings()
    source = get_source("synthetic_ct_abdomen")
    inputs = [dict(i, source_id=source.id) for i in list_inputs(source, settings)]
    local = run_inprocess(build_stages(source, settings), inputs)
    distributed = run_ray(build_stages(source, settings), inputs, settings)

    def key(rows):
        return sorted(
            (r["source_relpath"], r.get("id") or "", r.get("description_text") or r.get("reject_reason")) for r in rows
        )

    assert key(distributed) == key(local)
    assert sum(1 for r in local if r.get("reject_reason")) == 4

    # setup ran in Ray actors (not this process), once per actor: at most the pool size of pids
    counted = run_ray([CountSetups(), Explodes()], ROWS, settings)
    pids = {r["organ"] for r in counted}
    assert f"setup-pid-{os.getpid()}" not in pids and 1 <= len(pids) <= 2
    assert sorted(r["source_relpath"] for r in counted if r.get("quarantine_reasons")) == ["in/0", "in/1"]


class ExplodesInAnActor(CountSetups):
    def process_batch(self, rows):
        return Explodes.process_batch(self, super().process_batch(rows))


@pytest.mark.slow
def test_an_actor_call_carries_several_batches_and_quarantines_only_the_failing_one(settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import ACTOR_CALL_ROWS, run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert len(ROWS) <= ACTOR_CALL_ROWS  # one call for all six rows: three batches of two
    out = run_ray([ExplodesInAnActor()], [dict(row, id=row["source_relpath"]) for row in ROWS], load_settings())
    assert sorted(r["source_relpath"] for r in out if r.get("quarantine_reasons")) == ["in/0", "in/1"]
    assert len({r["organ"] for r in out if not r.get("quarantine_reasons")}) == 1  # one actor, set up once
