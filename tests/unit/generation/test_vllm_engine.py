"""The `vllm` engine up to the engine call. vLLM needs a CUDA GPU and cannot be installed here, so
the processor is built for real from the settings (ray.data.llm's chat template, tokenizer, vLLM
engine and detokenizer steps), and in the Ray pipeline test its four model steps are replaced by one
stand-in engine step that answers as vLLM's does: what the preprocess sends and what the
postprocess makes of the answers runs for real, through Ray Data."""

from __future__ import annotations

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable, MedtrinityError
from medtrinity_tasks.generation.prompt import OUTPUT_SCHEMA, PROMPT_VERSION, SYSTEM
from medtrinity_tasks.generation.vllm_engine import (
    VLLMConfig,
    VLLMDescription,
    check_vllm,
    engine_request,
    engine_result,
    processor_config,
)
from medtrinity_tasks.stages import run_inprocess
from tests.support.records import make_record
from tests.support.vllm import StandInVLLM, answer, vllm_config, vllm_settings

pytest.importorskip("aiohttp", reason="ray.data.llm imports aiohttp: pip install aiohttp")


def test_what_the_engine_needs_is_named_when_it_is_missing(tmp_path):
    with pytest.raises(EngineUnavailable, match="MEDTRINITY_RUNNER=ray"):
        check_vllm(vllm_settings(tmp_path, MEDTRINITY_RUNNER="inprocess"))
    with pytest.raises(EngineUnavailable, match="needs MEDTRINITY_VLLM_MODEL: a local directory"):
        check_vllm(load_settings({}))
    with pytest.raises(EngineUnavailable, match=f"MEDTRINITY_VLLM_MODEL={tmp_path}/none holds no model: .*config.json"):
        check_vllm(load_settings({"MEDTRINITY_VLLM_MODEL": str(tmp_path / "none")}))
    with pytest.raises(EngineUnavailable, match=r"vLLM, which is not installed: pip install 'medtrinity-tasks\[gpu\]'"):
        VLLMDescription(vllm_config(tmp_path))
    with pytest.raises(EngineUnavailable, match=r"vLLM, which is not installed: pip install 'medtrinity-tasks\[gpu\]'"):
        check_vllm(vllm_settings(tmp_path))


def test_the_processor_config_follows_the_settings(tmp_path):
    settings = vllm_settings(
        tmp_path,
        MEDTRINITY_VLLM_GPUS="2",
        MEDTRINITY_VLLM_REPLICAS="3",
        MEDTRINITY_VLLM_BATCH_SIZE="16",
        MEDTRINITY_VLLM_MAX_MODEL_LEN="4096",
    )
    config = processor_config(VLLMConfig.from_settings(settings))
    assert config.model_source == settings.vllm_model
    assert config.engine_kwargs["tensor_parallel_size"] == 2 and config.engine_kwargs["max_model_len"] == 4096
    assert config.batch_size == 16 and config.should_continue_on_error
    assert processor_config(replace_image(settings, "none")).prepare_multimodal_stage == {"enabled": False}


def replace_image(settings, mode) -> VLLMConfig:
    return VLLMConfig.from_settings(settings.with_changes(prompt_image=mode))


def test_the_built_processor_runs_template_tokenizer_vllm_and_detokenizer_with_a_replica_per_setting(tmp_path):
    from ray.data.llm import build_processor

    config = vllm_config(tmp_path, MEDTRINITY_VLLM_GPUS="2", MEDTRINITY_VLLM_REPLICAS="3")
    processor = build_processor(processor_config(config))
    assert list(processor.stages) == [
        "PrepareMultimodalStage", "ChatTemplateStage", "TokenizeStage", "vLLMEngineStage", "DetokenizeStage"
    ]  # fmt: skip
    engine = processor.stages["vLLMEngineStage"].get_dataset_map_batches_kwargs(batch_size=32, data_column="d")
    assert engine["compute"].max_size == 3
    assert engine["fn_constructor_kwargs"]["engine_kwargs"]["tensor_parallel_size"] == 2
    assert engine["fn_constructor_kwargs"]["should_continue_on_error"] is True


@pytest.mark.parametrize("mode", ["draw", "none"])
def test_the_request_carries_the_versioned_prompt_and_asks_for_the_schema(tmp_path, mode):
    config = vllm_config(tmp_path, MEDTRINITY_PROMPT_IMAGE=mode, MEDTRINITY_LLM_MAX_TOKENS="300")
    row = make_record()
    request = engine_request(row, config)
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
    stage = StandInVLLM(vllm_config(tmp_path))
    with pytest.raises(MedtrinityError, match="MEDTRINITY_RUNNER=ray"):
        run_inprocess([stage], [make_record()])
