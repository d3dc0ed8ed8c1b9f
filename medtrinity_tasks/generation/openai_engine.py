"""The ``openai`` engine: descriptions from any OpenAI-compatible chat endpoint (vLLM's server in
production, llama.cpp's in the tests), requested as JSON matching the prompt's schema.

Each actor of the stage keeps one HTTP client and sends a batch's requests concurrently (at most
MEDTRINITY_LLM_CONCURRENCY in flight, at most MEDTRINITY_LLM_QPS started per second), each with a
timeout and retried with exponential backoff on connection errors, time-outs and server errors. A
record whose request still fails, or whose answer cannot be read as the five sections, is
quarantined with the reason (and the raw answer kept in its ``description_text``); the batch goes on.

Ray's ``ray.data.llm`` HTTP processor is a Dataset transformation of its own, outside the stage
model every runner shares, so the client lives in the stage instead.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import EngineUnavailable
from medtrinity_tasks.generation import PROMPT_VERSIONS
from medtrinity_tasks.generation.parsing import with_answer
from medtrinity_tasks.generation.prompt import FACT_COLUMNS, OUTPUT_SCHEMA, PROMPT_VERSION, render
from medtrinity_tasks.reasons import Reason, quarantined
from medtrinity_tasks.stages.base import Resources, Stage

BACKOFF_S = 0.5
"""The first retry's wait; each later one waits twice as long."""


@dataclass(frozen=True)
class ChatConfig:
    """One OpenAI-compatible endpoint and how an actor uses it: what the ``openai`` engine and the judge
    take of the settings."""

    url: str
    model: str
    """The model name sent with each request."""
    response_format: str
    """How the answer's JSON schema is asked for (``response_format``'s dialects)."""
    max_tokens: int
    timeout_s: float
    retries: int
    concurrency: int
    """Requests in flight per actor."""
    qps: float
    """Request starts per second per actor; 0: no limit."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ChatConfig:
        return cls(
            url=settings.llm_url,
            model=settings.llm_model,
            response_format=settings.llm_response_format,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.llm_timeout_s,
            retries=settings.llm_retries,
            concurrency=settings.llm_concurrency,
            qps=settings.llm_qps,
        )


def check_server(url: str) -> None:
    """Fail now, naming the URL and how to start a server, if the endpoint at ``url`` does not answer."""
    import httpx

    try:
        httpx.get(f"{url}/models", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise EngineUnavailable(
            f"no OpenAI-compatible server answers at {url} ({type(exc).__name__}: {exc}); start one "
            "(vLLM: `vllm serve MODEL`; llama.cpp: `python -m llama_cpp.server --model FILE.gguf`) or set "
            "MEDTRINITY_LLM_URL"
        ) from None


def response_format(dialect: str, schema: dict = OUTPUT_SCHEMA, name: str = "description") -> dict:
    """The request's ``response_format`` asking for JSON matching ``schema``, as the server understands it."""
    if dialect == "json_schema":  # OpenAI's structured outputs, which vLLM serves
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    if dialect == "json_object":  # llama.cpp's server
        return {"type": "json_object", "schema": schema}
    raise EngineUnavailable(f"MEDTRINITY_LLM_RESPONSE_FORMAT must be json_schema or json_object, got {dialect!r}")


class _RateLimit:
    """Spaces request starts at least 1/qps seconds apart across the actor's threads."""

    def __init__(self, qps: float):
        self.interval = 1 / qps if qps > 0 else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(max(0.0, start - now))


class ChatClient:
    """One OpenAI-compatible endpoint as an actor uses it: one HTTP client, request starts spaced by
    the QPS limit across threads, each request retried with exponential backoff on connection
    errors, time-outs and server errors (a 4xx is the request's fault and is not retried)."""

    def __init__(self, config: ChatConfig):
        import httpx

        check_server(config.url)
        self.config = config
        self.client = httpx.Client(base_url=config.url, timeout=config.timeout_s)
        self.rate = _RateLimit(config.qps)

    def complete(self, messages: list[dict], schema: dict, name: str = "description") -> dict:
        """The server's reply to ``messages``, its answer asked for as JSON matching ``schema``."""
        import httpx

        body = {
            "model": self.config.model,
            "messages": messages,
            "max_tokens": self.config.max_tokens,
            "temperature": 0.0,
            "response_format": response_format(self.config.response_format, schema, name),
        }
        for attempt in range(self.config.retries + 1):
            self.rate.wait()
            try:
                response = self.client.post("/chat/completions", json=body)
                if response.status_code < 500:
                    response.raise_for_status()  # a 4xx is the request's fault: retrying cannot help
                    return response.json()
                error = httpx.HTTPStatusError(f"server error {response.status_code}", request=None, response=response)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                error = exc
            if attempt < self.config.retries:
                time.sleep(BACKOFF_S * 2**attempt)
        raise error


class ChatStage(Stage):
    """A stage that sends one request per row to the OpenAI-compatible endpoint, from a thread pool
    of MEDTRINITY_LLM_CONCURRENCY per actor; ``answer`` turns a row into its outcome."""

    batch_size = 16
    resources = Resources(cpus=0.5)  # waits on the server

    def __init__(self, chat: ChatConfig):
        response_format(chat.response_format)  # a wrong setting fails when the stage is built
        self.chat_config = chat

    def setup(self) -> None:
        self.chat = ChatClient(self.chat_config)

    def process_batch(self, rows: list[dict]) -> list[dict]:
        with ThreadPoolExecutor(max_workers=self.chat_config.concurrency) as pool:
            return list(pool.map(self.answer, rows))

    def answer(self, row: dict) -> dict:
        raise NotImplementedError


class OpenAIDescription(ChatStage):
    name = "generate_openai"
    version = PROMPT_VERSIONS["openai"]
    reads = ("image", *FACT_COLUMNS)
    reads_if_present = ("knowledge",)
    writes = ("description", "description_text", "generator")

    def __init__(self, chat: ChatConfig, *, knowledge_tokens: int, prompt_image: str):
        """``knowledge_tokens``: the most passage text a prompt carries; ``prompt_image``: the image in the
        prompt (``prompt.IMAGE_MODES``)."""
        super().__init__(chat)
        self.knowledge_tokens, self.prompt_image = knowledge_tokens, prompt_image

    def answer(self, row: dict) -> dict:
        started = time.monotonic()
        messages = render(row, self.knowledge_tokens, self.prompt_image)
        try:
            reply = self.chat.complete(messages, OUTPUT_SCHEMA)
        except Exception as exc:  # retried and still failing: this record only
            return quarantined(row, [Reason.of("generation_failed", f"{type(exc).__name__}: {exc}")])
        answer = reply["choices"][0]["message"].get("content") or ""
        usage = reply.get("usage") or {}
        generator = {
            "engine": "openai",
            "model": reply.get("model") or self.chat_config.model,
            "prompt_version": PROMPT_VERSION,
            "tokens_in": usage.get("prompt_tokens"),
            "tokens_out": usage.get("completion_tokens"),
            "latency_s": round(time.monotonic() - started, 3),
        }
        return with_answer(row, answer, generator)
