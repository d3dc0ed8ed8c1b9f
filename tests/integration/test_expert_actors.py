"""ROI experts: the MONAI bundle loader (2D and 3D), the sample expert's real inference, the
registry, and the expert stage, in process and on a Ray actor pool, with failures that lose nothing."""

from __future__ import annotations

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.roi.experts import ExpertConfig, ExpertRois
from medtrinity_tasks.roi.registry import expert_for
from medtrinity_tasks.sources.catalog import get_source
from tests.support.experts import expert_rows, held_out_records


@pytest.fixture(scope="module")
def held_out():
    return held_out_records()


class FailingExpert(ExpertRois):
    """Fails every batch holding the record ``fail_id``, as a broken model or node would."""

    fail_id = None

    def process_batch(self, rows):
        if any(row["id"] == self.fail_id for row in rows):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().process_batch(rows)


@pytest.mark.slow
def test_a_failing_batch_on_the_actor_pool_is_quarantined_and_nothing_is_lost(held_out, monkeypatch):
    import sys

    from ray import cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors cannot import a test module
    settings = load_settings().with_changes(ray_num_cpus=2, expert_actors=2, expert_batch_size=2)
    source = get_source("synthetic_ct_abdomen")
    entry = expert_for(source, settings)
    expert = FailingExpert(source, entry, ExpertConfig.from_settings(entry, settings))
    rows = expert_rows(held_out, 6)
    expert.fail_id = rows[0]["id"]
    out = {row["id"]: row for row in run_ray([expert], rows, settings)}
    assert set(out) == {row["id"] for row in rows}  # every record comes back
    quarantined = [row for row in out.values() if row.get("quarantine_reasons")]
    assert expert.fail_id in {row["id"] for row in quarantined} and len(quarantined) <= 2  # its batch only
    assert all("expert_rois failed: RuntimeError: CUDA error" in row["quarantine_reasons"][0] for row in quarantined)
    assert all(row["rois"] for row in out.values() if not row.get("quarantine_reasons"))
