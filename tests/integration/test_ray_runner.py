"""The two runners execute the same stage list with the same results, including failures."""

import os

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.run.pipeline import build_stages
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.stages import run_inprocess
from tests.support import stages as doubles
from tests.support.stages import ROWS, CountSetups, Explodes, ExplodesInAnActor


@pytest.mark.slow
def test_ray_runner_matches_in_process_runner(samples_dir, settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(doubles)  # workers cannot import test modules

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


@pytest.mark.slow
def test_an_actor_call_carries_several_batches_and_quarantines_only_the_failing_one(settings_env):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import ACTOR_CALL_ROWS, run_ray

    ray.cloudpickle.register_pickle_by_value(doubles)
    assert len(ROWS) <= ACTOR_CALL_ROWS  # one call for all six rows: three batches of two
    out = run_ray([ExplodesInAnActor()], [dict(row, id=row["source_relpath"]) for row in ROWS], load_settings())
    assert sorted(r["source_relpath"] for r in out if r.get("quarantine_reasons")) == ["in/0", "in/1"]
    assert len({r["organ"] for r in out if not r.get("quarantine_reasons")}) == 1  # one actor, set up once
