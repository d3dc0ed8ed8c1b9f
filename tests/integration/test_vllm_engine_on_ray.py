"""The `vllm` engine up to the engine call. vLLM needs a CUDA GPU and cannot be installed here, so
the processor is built for real from the settings (ray.data.llm's chat template, tokenizer, vLLM
engine and detokenizer steps), and in the Ray pipeline test its four model steps are replaced by one
stand-in engine step that answers as vLLM's does: what the preprocess sends and what the
postprocess makes of the answers runs for real, through Ray Data."""

from __future__ import annotations

import re

import pytest

from tests.support import vllm as stand_ins
from tests.support.records import make_record
from tests.support.vllm import StandInVLLM, vllm_config, vllm_settings

RAY_WORKER_LINE = re.compile(r"^(\x1b\[\d+m)?\(.*pid=\d+\)")
"""A line a Ray worker printed (its task and pid in parentheses, coloured on a terminal)."""


@pytest.mark.slow
def test_in_a_ray_pipeline_records_are_described_failures_quarantined_and_parked_rows_go_around(tmp_path):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(stand_ins)  # workers cannot import test modules
    settings = vllm_settings(tmp_path)
    records = [dict(make_record(slice_index=i), id=f"record-{i}") for i in range(4)]
    records += [
        dict(make_record(slice_index=7), id="record-error"),
        dict(make_record(slice_index=8), id="record-garbled"),
    ]
    rejected = dict(make_record(slice_index=9), id=None, reject_reason="not a readable image")
    quarantined = dict(make_record(slice_index=10), id="record-quarantined", quarantine_reasons=["roi failed"])
    rows = [dict(r, description=None, description_text=None, generator=None) for r in records]

    stage = StandInVLLM(vllm_config(tmp_path))
    out = {row["id"]: row for row in run_ray([stage], [*rows, rejected, quarantined], settings)}

    assert len(out) == 8  # nothing lost
    for i in range(4):
        described = out[f"record-{i}"]
        assert described["description"]["roi_texture"] == "The roi texture is described."
        assert described["generator"]["engine"] == "vllm" and described["generator"]["tokens_in"] == 700
        assert not described["quarantine_reasons"]
    assert out["record-error"]["quarantine_reasons"] == ["generation_failed: ValueError: prompt too long"]
    assert out["record-garbled"]["quarantine_reasons"] == ["output_invalid: no JSON object in the answer"]
    assert out[None]["reject_reason"] == "not a readable image" and out[None]["generator"]["engine"] == "template"
    assert out["record-quarantined"]["quarantine_reasons"] == ["roi failed"]


def test_a_run_with_the_vllm_engine_where_it_cannot_start_is_one_line_before_any_work(
    settings_env, tmp_path, monkeypatch, capsys
):
    from medtrinity_tasks.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("MEDTRINITY_VLLM_MODEL", str(model))
    assert main(["run", "synthetic_dermoscopy", "--engine", "vllm"]) != 0
    # lines Ray's workers print, prefixed with their task and pid, can arrive late from an earlier test's run
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not RAY_WORKER_LINE.match(line)]
    assert len(lines) == 1 and "vLLM, which is not installed: pip install 'medtrinity-tasks[gpu]'" in lines[0]
    assert not any((tmp_path / "out").rglob("shard-*"))  # nothing was processed
