"""Settings from environment variables, with embedded defaults that run on a laptop or in CI.

Each setting is declared once, in ``Settings``: its environment variable, type, default, rules and
description. ``load_settings`` reads them, and README.md's settings table is printed from the same
declaration (``python -m medtrinity_tasks.config``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from medtrinity_tasks.errors import MedtrinityError


def _path_list(value: Any) -> Any:
    return tuple(part for part in value.split(os.pathsep) if part) if isinstance(value, str) else value


def _address_list(value: Any) -> Any:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


AbsolutePath = Annotated[Path, AfterValidator(Path.absolute)]
PathList = Annotated[tuple[AbsolutePath, ...], NoDecode, BeforeValidator(_path_list)]
AddressList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_address_list)]
Url = Annotated[str, AfterValidator(lambda url: url.rstrip("/"))]


def setting(env: str | AliasChoices, default: Any, description: str, shown: str | None = None, **rules: Any) -> Any:
    """One setting's environment variable, default and description; ``shown`` is the default as the
    README's table says it where the value itself would not tell (derived, unset, or a package path)."""
    extra = {"shown": shown} if shown else None
    return Field(default, validation_alias=env, description=description, json_schema_extra=extra, **rules)


class Settings(BaseSettings):
    """The pipeline's settings; built by ``load_settings``, changed copies by ``with_changes``."""

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="ignore", validate_default=True
    )

    samples_dir: AbsolutePath = setting(
        "MEDTRINITY_SAMPLES_DIR",
        Path("data/samples"),
        "where `medtrinity samples` writes; sample catalog entries point here",
    )
    data_dir: str | None = setting(
        "MEDTRINITY_DATA_DIR",
        None,
        "where a site stages public sources (a path or `s3://bucket/prefix`); the shipped real-source entries point "
        "below it, and a local catalog location must resolve below it (or the samples directory) unless its entry "
        "sets `allow_outside_data_dir: true`",
    )
    cache_dir: AbsolutePath = setting(
        "MEDTRINITY_CACHE_DIR",
        Path("data/cache"),
        "local mirrors of sources staged on S3 or served over DICOMweb, brought in step by the listing "
        "(shared storage on a multi-node Ray cluster)",
    )
    output_uri: str = setting(
        "MEDTRINITY_OUTPUT", "data/output", "output: a path, `file://path` or `s3://bucket/prefix`"
    )
    s3_endpoint_url: str | None = setting(
        AliasChoices("MEDTRINITY_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        None,
        "an S3 API server other than AWS (MinIO, moto)",
        shown="AWS",
    )
    shard_size: int = setting(
        "MEDTRINITY_SHARD_SIZE", 16, "input files per shard (one mapped Airflow task each; bounds its memory)", ge=1
    )
    context_slices: int = setting(
        "MEDTRINITY_CONTEXT_SLICES", 2, "slices without a lesion kept per volume, as anatomical context", ge=0
    )
    image_size: int = setting(
        "MEDTRINITY_IMAGE_SIZE",
        512,
        "longest side of an output image; larger images shrink, aspect kept (0: keep)",
        ge=0,
    )
    catalog_dirs: PathList = setting(
        "MEDTRINITY_CATALOG_DIRS",
        (),
        "more directories of catalog YAML files (`os.pathsep`-separated), for a site's own sources",
    )
    deid_salt: str | None = setting(
        "MEDTRINITY_DEID_SALT",
        None,
        "secret salt of the pseudonyms replacing DICOM series and file names, and any file or folder name that holds "
        "personal data; required for real DICOM sources (other sources' inputs whose names hold personal data are "
        "rejected without it); keep it constant so that record ids stay stable",
        shown="none (sample sources: built in)",
    )
    max_voxels: int = setting(
        "MEDTRINITY_MAX_VOXELS",
        2**29,
        "the most voxels (pixels x frames) one input may claim before it is decoded "
        "(2**29 holds a 512 x 512 x 2048 CT)",
        shown="2**29",
        ge=1,
    )
    max_decoded_mb: int = setting(
        "MEDTRINITY_MAX_DECODED_MB",
        4096,
        "the most memory one input may take decoded, in MiB (stored values and the float32 copy)",
        ge=1,
    )
    max_image_pixels: int = setting(
        "MEDTRINITY_MAX_IMAGE_PIXELS",
        100_000_000,
        "the most pixels one 2D image may claim (10,000 x 10,000 holds whole-slide tiles and large radiographs)",
        ge=1,
    )
    archive_max_gb: float = setting(
        "MEDTRINITY_ARCHIVE_MAX_GB", 256.0, "the most bytes one archive may unpack to in `sources unpack`, in GiB", gt=0
    )
    archive_max_members: int = setting(
        "MEDTRINITY_ARCHIVE_MAX_MEMBERS", 1_000_000, "the most members one archive may hold", ge=1
    )
    archive_max_ratio: float = setting(
        "MEDTRINITY_ARCHIVE_MAX_RATIO",
        200.0,
        "the most an archive may grow when unpacked: bytes over the archive's size, judged after 64 MiB "
        "(compressed imaging is rarely above 10)",
        gt=0,
    )
    runner: Literal["ray", "inprocess"] = setting("MEDTRINITY_RUNNER", "ray", "`ray`, or `inprocess` for debugging")
    ray_address: str | None = setting(
        "RAY_ADDRESS", None, "a running Ray cluster; unset starts a private local one", shown="local Ray"
    )
    ray_num_cpus: int | None = setting("MEDTRINITY_RAY_NUM_CPUS", None, "CPUs of the local Ray", shown="all", ge=1)
    parallel_shards: int = setting(
        "MEDTRINITY_PARALLEL_SHARDS",
        1,
        "shard tasks of one Airflow run at a time (each task without `RAY_ADDRESS` starts its own Ray on all CPUs)",
        shown="1, or 8 with `RAY_ADDRESS`",
        ge=1,
    )
    min_pass_rate: float = setting(
        "MEDTRINITY_MIN_PASS_RATE", 0.9, "gate threshold for sources whose catalog entry sets none", ge=0, le=1
    )
    task_retries: int = setting(
        "MEDTRINITY_TASK_RETRIES",
        2,
        "retries (exponential backoff) of Airflow tasks that may meet a passing fault; the gate and an unstaged "
        "source never retry",
        ge=0,
    )
    lease_timeout_s: float = setting(
        "MEDTRINITY_LEASE_TIMEOUT_S",
        4 * 3600.0,
        "how long a run's lease on a source's output (`sources/<id>/lease.json`: one run at a time; another is "
        "refused at plan, or waits with `medtrinity run --wait` or the `wait_for_lease` param) lasts unless a shard "
        "task renews it; an expired lease belongs to a dead run and is taken",
        shown="14400 (4 h)",
        gt=0,
    )
    notify_emails: AddressList = setting(
        "MEDTRINITY_NOTIFY_EMAILS",
        (),
        "comma-separated addresses mailed when a task fails (Airflow's SMTP notifier over the `smtp_default` "
        "connection, e.g. `AIRFLOW_CONN_SMTP_DEFAULT`); the mail names task, run and log, never the error text",
    )
    models_dir: AbsolutePath = setting(
        "MEDTRINITY_MODELS_DIR",
        Path(__file__).parent / "roi" / "bundles",
        "where experts' MONAI bundles are (the default holds the sample expert)",
        shown="the package's `roi/bundles`",
    )
    experts_file: AbsolutePath | None = setting(
        "MEDTRINITY_EXPERTS",
        None,
        "an expert registry replacing the shipped one: which MONAI bundle labels which (modality, region, sources)",
        shown="`medtrinity_tasks/roi/experts.yaml`",
    )
    expert_gpus: float = setting(
        "MEDTRINITY_EXPERT_GPUS",
        0.0,
        "GPUs per expert actor; above 0, shard tasks of sources with an expert take a slot of the Airflow pool "
        "`MEDTRINITY_GPU_POOL`",
        ge=0,
    )
    gpu_pool: str = setting(
        "MEDTRINITY_GPU_POOL",
        "medtrinity_gpu",
        "that pool: create it with as many slots as GPU shard tasks may run at once "
        '(`airflow pools set medtrinity_gpu 2 "GPU experts"`)',
    )
    expert_actors: int = setting(
        "MEDTRINITY_EXPERT_ACTORS",
        1,
        "the largest expert actor pool per shard (each actor loads the model once)",
        ge=1,
    )
    expert_batch_size: int = setting(
        "MEDTRINITY_EXPERT_BATCH_SIZE", 8, "images per expert forward pass (halved on out-of-memory)", ge=1
    )
    unannotated_slices: int = setting(
        "MEDTRINITY_UNANNOTATED_SLICES",
        8,
        "slices kept of a volume without annotations, for its expert or (`roi: optional`) as image-level records",
        ge=0,
    )
    min_image_side: int = setting(
        "MEDTRINITY_MIN_IMAGE_SIDE",
        32,
        "the shortest side, in pixels, of an image the pipeline keeps: a volume is cut only along an axis that "
        "gives images this large, and smaller images are quarantined as degenerate",
        ge=1,
    )
    max_aspect_ratio: float = setting(
        "MEDTRINITY_MAX_ASPECT_RATIO",
        6.0,
        "the longest side over the shortest of an image the pipeline keeps; longer strips are quarantined as "
        "degenerate (a full-spine radiograph is about 3)",
        gt=1,
    )
    dicomweb_username: str | None = setting(
        "MEDTRINITY_DICOMWEB_USERNAME", None, "user name for HTTP basic authentication to DICOMweb sources"
    )
    dicomweb_password: str | None = setting(
        "MEDTRINITY_DICOMWEB_PASSWORD", None, "password for HTTP basic authentication to DICOMweb sources"
    )
    dicomweb_token: str | None = setting(
        "MEDTRINITY_DICOMWEB_TOKEN", None, "bearer token for DICOMweb sources (instead of a user name and password)"
    )
    dicomweb_timeout_s: float = setting(
        "MEDTRINITY_DICOMWEB_TIMEOUT_S", 60.0, "seconds one DICOMweb request may take", gt=0
    )
    dicomweb_retries: int = setting(
        "MEDTRINITY_DICOMWEB_RETRIES",
        3,
        "retries of a failed DICOMweb request (connection errors, time-outs, 429 and 5xx), with backoff",
        ge=0,
    )
    qdrant_url: str | None = setting(
        "QDRANT_URL",
        None,
        "a Qdrant server holding the knowledge base; unset: local mode in `MEDTRINITY_KNOWLEDGE_DIR`",
        shown="local mode",
    )
    qdrant_api_key: str | None = setting("QDRANT_API_KEY", None, "the Qdrant server's API key, if it wants one")
    knowledge_dir: AbsolutePath = setting(
        "MEDTRINITY_KNOWLEDGE_DIR",
        Path("data/knowledge"),
        "the local-mode knowledge store (without `QDRANT_URL`; one writer, readers work on copies)",
    )
    knowledge_collection: str = setting(
        "MEDTRINITY_KNOWLEDGE_COLLECTION", "medtrinity_knowledge", "the Qdrant collection of passages"
    )
    embedding_model: AbsolutePath | None = setting(
        "MEDTRINITY_EMBEDDING_MODEL",
        None,
        "a local sentence-transformers directory (e.g. a biomedical encoder); the collection must have been built "
        "with it",
        shown="the packaged MiniLM",
    )
    knowledge_top_k: int = setting(
        "MEDTRINITY_KNOWLEDGE_TOP_K", 5, "passages retrieved per record; 0 leaves retrieval out of the pipeline", ge=0
    )
    knowledge_tokens: int = setting(
        "MEDTRINITY_KNOWLEDGE_TOKENS",
        400,
        "the most passage text a record carries, in tokens (words and punctuation)",
        ge=0,
    )
    llm_url: Url = setting(
        "MEDTRINITY_LLM_URL",
        "http://127.0.0.1:8000/v1",
        "the `openai` engine's OpenAI-compatible endpoint (vLLM's server in production)",
    )
    llm_model: str = setting("MEDTRINITY_LLM_MODEL", "default", "the model name sent with each request")
    llm_response_format: Literal["json_schema", "json_object"] = setting(
        "MEDTRINITY_LLM_RESPONSE_FORMAT",
        "json_schema",
        "how the answer's JSON schema is asked for: `json_schema` (OpenAI's and vLLM's structured outputs) or "
        "`json_object` (llama.cpp's server: a json_object with the schema)",
    )
    llm_concurrency: int = setting("MEDTRINITY_LLM_CONCURRENCY", 4, "requests in flight per generation actor", ge=1)
    llm_qps: float = setting(
        "MEDTRINITY_LLM_QPS", 0.0, "the most request starts per second per generation actor; 0: no limit", ge=0
    )
    llm_timeout_s: float = setting("MEDTRINITY_LLM_TIMEOUT_S", 120.0, "seconds one request may take", gt=0)
    llm_retries: int = setting(
        "MEDTRINITY_LLM_RETRIES",
        3,
        "retries of a failed request (exponential backoff) before its record is quarantined as `generation_failed`",
        ge=0,
    )
    llm_max_tokens: int = setting(
        "MEDTRINITY_LLM_MAX_TOKENS", 768, "the most tokens one description may take (both LLM engines)", ge=1
    )
    vllm_model: str | None = setting(
        "MEDTRINITY_VLLM_MODEL",
        None,
        "the `vllm` engine's model: a local Hugging Face model directory (or a model id the cluster's nodes can "
        "load); required by that engine",
    )
    vllm_gpus: int = setting("MEDTRINITY_VLLM_GPUS", 1, "GPUs per vLLM engine replica (its tensor-parallel size)", ge=1)
    vllm_replicas: int = setting(
        "MEDTRINITY_VLLM_REPLICAS", 1, "vLLM engine replicas per shard, each on its own GPU actor(s)", ge=1
    )
    vllm_batch_size: int = setting(
        "MEDTRINITY_VLLM_BATCH_SIZE", 32, "records handed to a vLLM engine replica at a time", ge=1
    )
    vllm_max_model_len: int = setting(
        "MEDTRINITY_VLLM_MAX_MODEL_LEN", 8192, "the engine's context length in tokens (prompt and answer)", ge=1
    )
    judge: str | None = setting(
        "MEDTRINITY_JUDGE",
        None,
        "`openai`: the LLM at `MEDTRINITY_LLM_URL` scores each description's sections 1-5; unset: no judge",
    )
    judge_min_score: int = setting(
        "MEDTRINITY_JUDGE_MIN_SCORE",
        3,
        "a record with a section the judge scores below this (1-5) is quarantined",
        ge=1,
        le=5,
    )
    prompt_image: Literal["draw", "crop", "plain", "none"] = setting(
        "MEDTRINITY_PROMPT_IMAGE",
        "draw",
        "the image in the prompt: ROIs drawn on it (`draw`), cropped around the largest (`crop`), `plain`, "
        "or `none` for a text-only model",
    )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        """Validate only what ``load_settings`` or ``with_changes`` hand over: no .env or secret files."""
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _default_parallel_shards(cls, values: dict) -> dict:
        """Each shard task without a Ray cluster starts its own local Ray on all CPUs: one at a time then."""
        if values.get("MEDTRINITY_PARALLEL_SHARDS") is None:
            return {**values, "MEDTRINITY_PARALLEL_SHARDS": 8 if values.get("RAY_ADDRESS") else 1}
        return values

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (by field name), validated as the environment's values are."""
        unknown = sorted(changes.keys() - type(self).model_fields.keys())
        if unknown:
            raise TypeError(f"Settings has no field {', '.join(unknown)}")
        values = {**self.model_dump(), **changes}
        return _validated({environment_names(name)[0]: value for name, value in values.items()})

    @property
    def allowed_root(self) -> Path | None:
        """MEDTRINITY_DATA_DIR as a local directory, which catalog locations must lie below (unless an entry
        sets ``allow_outside_data_dir``); None when unset or on S3."""
        if not self.data_dir or self.data_dir.startswith("s3://"):
            return None
        return Path(self.data_dir).absolute()

    def location_variables(self) -> dict[str, str]:
        """The variables a catalog entry's location may name: the samples directory and MEDTRINITY_DATA_DIR once set."""
        variables = {"MEDTRINITY_SAMPLES_DIR": str(self.samples_dir)}
        return {**variables, "MEDTRINITY_DATA_DIR": self.data_dir} if self.data_dir else variables


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source over one mapping: the process's environment or a given one."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str]:
        return {name: value for name, value in self._environ.items() if value != ""}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` alone when given (nothing else is read), else from the process's environment."""
    return _validated(_EnvironSource(os.environ if env is None else env)())


def _validated(values: dict[str, Any]) -> Settings:
    try:
        return Settings(**values)
    except ValidationError as error:
        raise MedtrinityError("; ".join(_problem(problem) for problem in error.errors())) from None


_PHRASES = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "int_type": "must be an integer",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be above {gt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be {expected}",
}


def _problem(error: Any) -> str:
    """One bad value as a person reads it: ``MEDTRINITY_SHARD_SIZE must be an integer, got 'x'``."""
    name = str(error["loc"][0]) if error["loc"] else "settings"
    limits = {key: f"{value:g}" if isinstance(value, float) else value for key, value in error.get("ctx", {}).items()}
    phrase = _PHRASES.get(error["type"], "is invalid ({msg})").format(msg=error["msg"], **limits)
    return f"{name} {phrase}, got {error['input']!r}"


def environment_names(field_name: str) -> tuple[str, ...]:
    """The environment variables a field is read from, first choice first."""
    alias = Settings.model_fields[field_name].validation_alias
    return tuple(alias.choices) if isinstance(alias, AliasChoices) else (alias,)


def _shown_default(field: FieldInfo) -> str:
    shown = (field.json_schema_extra or {}).get("shown")
    if shown:
        return shown
    if field.default in (None, ()):
        return "unset"
    if isinstance(field.default, (str, Path)):
        return f"`{field.default}`"
    return f"{field.default:g}" if isinstance(field.default, float) else str(field.default)


def settings_table() -> str:
    """README.md's settings table: one Markdown row per setting (variable, default, meaning)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        first, *others = environment_names(name)
        variable = f"`{first}`" + "".join(f" (or `{other}`)" for other in others)
        rows.append(f"| {variable} | {_shown_default(field)} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
