"""The `vllm` engine's processor with its model steps replaced by one stand-in engine step that answers
as vLLM's does, for tests on machines without a GPU."""

from __future__ import annotations

import json

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.generation.vllm_engine import VLLMConfig, VLLMDescription
from medtrinity_tasks.records import DESCRIPTION_SECTIONS


def vllm_settings(tmp_path, **env):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return load_settings({"MEDTRINITY_VLLM_MODEL": str(model), **env})


def vllm_config(tmp_path, **env) -> VLLMConfig:
    return VLLMConfig.from_settings(vllm_settings(tmp_path, **env))


def answer() -> str:
    return json.dumps({name: f"The {name.replace('_', ' ')} is described." for name in DESCRIPTION_SECTIONS})


class StandInVLLM(VLLMDescription):
    """The real processor with its model steps replaced by ``stand_in_engine_stage``."""

    requires = ()  # the stand-in engine needs no vLLM

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
