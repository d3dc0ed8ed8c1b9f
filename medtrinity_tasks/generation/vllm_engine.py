"""The ``vllm`` engine: the in-process vLLM engine on Ray GPU actors, through ``ray.data.llm``'s vLLM
processor, which runs chat template, tokenizer, engine (with structured outputs) and detokenizer as
Ray Data steps and places each engine replica on its GPUs.

The prompt, the output schema and the parsing are the ``openai`` engine's, so the two write the
same records. The processor is a Dataset transformation, so this stage is a ``DatasetStage``: only
the Ray runner runs it. A record whose generation fails (the processor continues on errors) is
quarantined as ``generation_failed``; one whose answer cannot be read as ``output_invalid``.

Needs the ``gpu`` extra and a CUDA GPU per replica; the model comes from MEDTRINITY_VLLM_MODEL.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import EngineUnavailable
from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.generation.parsing import with_answer
from medtrinity_tasks.generation.prompt import FACT_COLUMNS, OUTPUT_SCHEMA, PROMPT_VERSION, render
from medtrinity_tasks.reasons import Reason, quarantined
from medtrinity_tasks.records import ROW_SCHEMA
from medtrinity_tasks.stages.base import DatasetStage, Requirement, Resources

VLLM = Requirement("vllm", "gpu", EngineUnavailable, "vLLM")  # ray[llm] brings it; it needs a CUDA GPU


@dataclass(frozen=True)
class VLLMConfig:
    """The engine's model and its replicas, and the prompt it is sent: what the ``vllm`` engine takes of the
    settings."""

    model: str
    """A local Hugging Face model directory, or a model id the cluster's nodes can load."""
    gpus: int
    """GPUs per engine replica (its tensor-parallel size)."""
    replicas: int
    batch_size: int
    max_model_len: int
    max_tokens: int
    knowledge_tokens: int
    prompt_image: str

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMConfig:
        """The engine's configuration, or an error saying what to set where the settings cannot run it."""
        if settings.runner != "ray":
            raise EngineUnavailable("the vllm engine runs on Ray's GPU actors: set MEDTRINITY_RUNNER=ray")
        if not settings.vllm_model:
            raise EngineUnavailable(
                "the vllm engine needs MEDTRINITY_VLLM_MODEL: a local directory holding a Hugging Face model "
                "(config.json, tokenizer, weights); nothing is downloaded at run time"
            )
        model = Path(settings.vllm_model)
        if (model.is_absolute() or settings.vllm_model.startswith(".")) and not (model / "config.json").is_file():
            raise EngineUnavailable(
                f"MEDTRINITY_VLLM_MODEL={settings.vllm_model} holds no model: put a Hugging Face model directory "
                "there (config.json, tokenizer files, *.safetensors)"
            )
        return cls(
            model=settings.vllm_model,
            gpus=settings.vllm_gpus,
            replicas=settings.vllm_replicas,
            batch_size=settings.vllm_batch_size,
            max_model_len=settings.vllm_max_model_len,
            max_tokens=settings.llm_max_tokens,
            knowledge_tokens=settings.knowledge_tokens,
            prompt_image=settings.prompt_image,
        )


def check_vllm(settings: Settings) -> None:
    """Fail now, saying what to install or set, if the engine cannot start."""
    VLLMConfig.from_settings(settings)
    VLLMDescription.check_requirements()


def processor_config(config: VLLMConfig):
    """The ``ray.data.llm`` vLLM processor's configuration."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=config.model,
        engine_kwargs={"tensor_parallel_size": config.gpus, "max_model_len": config.max_model_len},
        concurrency=config.replicas,
        batch_size=config.batch_size,
        should_continue_on_error=True,  # a failing record gets __inference_error__; the batch goes on
        prepare_multimodal_stage={"enabled": config.prompt_image != "none"},
    )


def engine_request(row: dict, config: VLLMConfig) -> dict:
    """The processor's preprocess: the record's chat messages, and sampling parameters that ask
    for JSON matching ``OUTPUT_SCHEMA`` (vLLM's structured outputs)."""
    return dict(
        row,
        messages=render(row, config.knowledge_tokens, config.prompt_image),
        sampling_params={
            "temperature": 0.0,
            "max_tokens": config.max_tokens,
            "structured_outputs": {"json": OUTPUT_SCHEMA},
        },
    )


def engine_result(row: dict, model: str) -> dict:
    """The processor's postprocess (and what becomes of a row whose generation failed, which the
    processor passes around its postprocess): the record, its columns only, with the engine's answer
    parsed and accounted, or quarantined with the reason."""
    record = {name: row.get(name) for name in ROW_SCHEMA.names}
    if row.get("__inference_error__"):
        return quarantined(record, [Reason.of("generation_failed", str(row["__inference_error__"]))])
    generator = {
        "engine": "vllm",
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "tokens_in": row.get("num_input_tokens"),
        "tokens_out": row.get("num_generated_tokens"),
        "latency_s": round(float(row["time_taken_llm"]), 3) if row.get("time_taken_llm") is not None else None,
    }
    return with_answer(record, row.get("generated_text") or "", generator)


class VLLMDescription(DatasetStage):
    name = "generate_vllm"
    version = PROMPT_VERSIONS["vllm"]
    reads = ("image", *FACT_COLUMNS)
    reads_if_present = ("knowledge",)
    writes = ("description", "description_text", "generator")
    requires = (VLLM,)

    def __init__(self, config: VLLMConfig):
        self.config = config
        self.resources = Resources(cpus=1, gpus=config.gpus)

    def processor(self):
        from ray.data.llm import build_processor

        return build_processor(
            processor_config(self.config),
            preprocess=partial(engine_request, config=self.config),
            postprocess=partial(engine_result, model=self.config.model),
        )

    def transform(self, dataset):
        # rows whose generation failed skip the processor's postprocess: they are quarantined here
        return self.processor()(dataset).map(partial(_quarantine_failed, model=self.config.model))


def _quarantine_failed(row: dict, model: str) -> dict:
    return engine_result(row, model) if row.get("__inference_error__") else row
