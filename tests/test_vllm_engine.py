"""The `vllm` engine up to the engine call. vLLM needs a CUDA GPU and cannot be installed here, so
the processor is built for real from the settings (ray.data.llm's chat template, tokenizer, vLLM
engine and detokenizer steps), and in the Ray pipeline test its four model steps are replaced by one
stand-in engine step that answers as vLLM's does: what the preprocess sends and what the
postprocess makes of the answers runs for real, through Ray Data."""

from __future__ import annotations

import json
import sys

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable, MedtrinityError
from medtrinity_tasks.generation.prompt import OUTPUT_SCHEMA, PROMPT_VERSION, SYSTEM
from medtrinity_tasks.generation.vllm_engine import (
    VLLMDescription,
    check_vllm,
    engine_request,
    engine_result,
    processor_config,
)
from medtrinity_tasks.records import DESCRIPTION_SECTIONS
from medtrinity_tasks.stages import run_inprocess
from tests.helpers import make_record

pytest.importorskip("aiohttp", reason="ray.data.llm imports aiohttp: pip install aiohttp")


def vllm_settings(tmp_path, **env):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return load_settings({"MEDTRINITY_VLLM_MODEL": str(model), **env})


def answer() -> str:
    return json.dumps({name: f"The {name.replace('_', ' ')} is described." for name in DESCRIPTION_SECTIONS})


def test_what_the_engine_needs_is_named_when_it_is_missing(tmp_path):
    with pytest.raises(EngineUnavailable, match="MEDTRINITY_RUNNER=ray"):
        check_vllm(vllm_settings(tmp_path, MEDTRINITY_RUNNER="inprocess"))
    with pytest.raises(EngineUnavailable, match="needs MEDTRINITY_VLLM_MODEL: a local directory"):
        check_vllm(load_settings({}))
    with pytest.raises(EngineUnavailable, match=f"MEDTRINITY_VLLM_MODEL={tmp_path}/none holds no model: .*config.json"):
        check_vllm(load_settings({"MEDTRINITY_VLLM_MODEL": str(tmp_path / "none")}))
    with pytest.raises(EngineUnavailable, match=r"vLLM, which is not installed: pip install 'medtrinity-tasks\[gpu\]'"):
        VLLMDescription(vllm_settings(tmp_path))


def test_the_processor_config_follows_the_settings(tmp_path):
    settings = vllm_settings(
        tmp_path,
        MEDTRINITY_VLLM_GPUS="2",
        MEDTRINITY_VLLM_REPLICAS="3",
        MEDTRINITY_VLLM_BATCH_SIZE="16",
        MEDTRINITY_VLLM_MAX_MODEL_LEN="4096",
    )
    config = processor_config(settings)
    assert config.model_source == settings.vllm_model
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.engine_kwargs["max_model_len"] == 4096
    assert config.batch_size == 16 and config.should_continue_on_error
    assert processor_config(replace_image(settings, "none")).prepare_multimodal_stage == {"enabled": False}


def replace_image(settings, mode):
    from dataclasses import replace

    return replace(settings, prompt_image=mode)


def test_the_built_processor_runs_template_tokenizer_vllm_and_detokenizer_with_a_replica_per_setting(tmp_path):
    from ray.data.llm import build_processor

    settings = vllm_settings(tmp_path, MEDTRINITY_VLLM_GPUS="2", MEDTRINITY_VLLM_REPLICAS="3")
    processor = build_processor(processor_config(settings))
    assert list(processor.stages) == [
        "PrepareMultimodalStage", "ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"
    ]  # fmt: skip
    engine = processor.stages["vLLMEngineStage"].get_dataset_map_batches_kwargs(batch_size=32, data_column="d")
    assert engine["compute"].max_size == 3
    assert engine["fn_constructor_kwargs"]["engine_kwargs"]["tensor_parallel_size"] == 2
    assert engine["fn_constructor_kwargs"]["should_continue_on_error"] is True


@pytest.mark.parametrize("mode", ["draw", "none"])
def test_the_request_carries_the_versioned_prompt_and_asks_for_the_schema(tmp_path, mode):
    settings = vllm_settings(tmp_path, MEDTRINITY_PROMPT_IMAGE=mode, MEDTRINITY_LLM_MAX_TOKENS="300")
    row = make_record()
    request = engine_request(row, settings)
    assert request["id"] == row["id"]  # the record's columns travel on to the postprocess
    system, user = request["messages"]
    assert system == {"role": "system", "content": SYSTEM}
    if mode == "none":
        assert isinstance(user["content"], str) and "liver tumour" in user["content"]
    else:
        image, text = user["content"]
        assert image["image_url"]["url"].startswith("data:image/png;base64,") and "FACTS:" in text["text"]
    assert request["sampling_params"] == {
        "temperature": 0.0,
        "max_tokens": 300,
        "structured_outputs": {"json": OUTPUT_SCHEMA},
    }


def engine_row(row: dict, **engine) -> dict:
    """``row`` as the postprocess sees it: the record's columns, the preprocess's and the engine's."""
    return {
        **row,
        "messages": [], "sampling_params": {}, "prompt": "...", "generated_tokens": [1, 2],
        "num_input_tokens": 812, "num_generated_tokens": 96, "time_taken_llm": 1.23456, "__inference_error__": "",
        **engine,
    }  # fmt: skip


def test_the_answer_is_parsed_and_accounted_and_only_record_columns_are_kept():
    record = engine_result(engine_row(make_record(), generated_text=answer()), model="/models/medgemma")
    assert record["description"]["modality"] == "The modality is described."
    assert record["description_text"].startswith("Modality: The modality is described.")
    assert record["generator"] == {
        "engine": "vllm",
        "model": "/models/medgemma",
        "prompt_version": PROMPT_VERSION,
        "tokens_in": 812,
        "tokens_out": 96,
        "latency_s": 1.235,
    }
    assert "messages" not in record and "__inference_error__" not in record and not record.get("quarantine_reasons")


def test_failed_and_unreadable_generations_are_quarantined_with_the_reason():
    failed = engine_result(engine_row(make_record(), __inference_error__="EngineGenerateError: boom"), model="m")
    assert failed["quarantine_reasons"] == ["generation_failed: EngineGenerateError: boom"]
    invalid = engine_result(engine_row(make_record(), generated_text='{"modality": "CT"'), model="m")
    assert invalid["quarantine_reasons"][0].startswith("output_invalid: ")
    assert invalid["description_text"] == '{"modality": "CT"'  # the raw answer, kept for inspection


def test_the_in_process_runner_refuses_a_ray_data_stage(tmp_path):
    stage = StandInVLLM(vllm_settings(tmp_path))
    with pytest.raises(MedtrinityError, match="MEDTRINITY_RUNNER=ray"):
        run_inprocess([stage], [make_record()])


class StandInVLLM(VLLMDescription):
    """The real processor with its model steps replaced by ``stand_in_engine_stage``."""

    def __init__(self, settings):
        self.settings = settings

    def processor(self):
        processor = super().processor()
        processor.stages = {"StandInEngine": stand_in_engine_stage()}
        return processor


def stand_in_engine_stage():
    """An engine step shaped as ray.data.llm's vLLM step: per row it reads the messages and the
    sampling parameters and returns vLLM's output columns; a record whose id ends in 'error' fails
    (as the processor reports a failure when it continues on errors), one ending in 'garbled' gets
    text that is not JSON."""
    from ray.llm._internal.batch.stages.base import StatefulStage, StatefulStageUDF

    class StandInEngineUDF(StatefulStageUDF):
        async def udf(self, rows):
            for row in rows:
                assert row["sampling_params"]["structured_outputs"]["json"]["required"] == list(DESCRIPTION_SECTIONS)
                user = row["messages"][1]["content"]
                text = answer() if "FACTS:" in json.dumps(user) else "no facts were sent"
                failed = row["id"].endswith("error")
                yield {
                    self.IDX_IN_BATCH_COLUMN: row[self.IDX_IN_BATCH_COLUMN],
                    "generated_text": "" if failed else "garbled output" if row["id"].endswith("garbled") else text,
                    "num_input_tokens": 0 if failed else 700,
                    "num_generated_tokens": 0 if failed else 90,
                    "time_taken_llm": -1 if failed else 0.25,
                    "__inference_error__": "ValueError: prompt too long" if failed else "",
                }

    class StandInEngine(StatefulStage):
        fn: type = StandInEngineUDF

    return StandInEngine(fn_constructor_kwargs={}, map_batches_kwargs={"concurrency": 1})


@pytest.mark.slow
def test_in_a_ray_pipeline_records_are_described_failures_quarantined_and_parked_rows_go_around(tmp_path):
    import ray.cloudpickle

    from medtrinity_tasks.stages.ray_runner import run_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules
    settings = vllm_settings(tmp_path)
    records = [dict(make_record(slice_index=i), id=f"record-{i}") for i in range(4)]
    records += [
        dict(make_record(slice_index=7), id="record-error"),
        dict(make_record(slice_index=8), id="record-garbled"),
    ]
    rejected = dict(make_record(slice_index=9), id=None, reject_reason="not a readable image")
    quarantined = dict(make_record(slice_index=10), id="record-quarantined", quarantine_reasons=["roi failed"])
    rows = [dict(r, description=None, description_text=None, generator=None) for r in records]

    out = {row["id"]: row for row in run_ray([StandInVLLM(settings)], [*rows, rejected, quarantined], settings)}

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
    error = capsys.readouterr().err.strip()
    assert "vLLM, which is not installed: pip install 'medtrinity-tasks[gpu]'" in error and "\n" not in error
    assert not any((tmp_path / "out").rglob("shard-*"))  # nothing was processed
