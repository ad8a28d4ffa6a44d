"""Generators: an OpenAI-compatible HTTP client, and local models through transformers or vLLM.

The HTTP client is the standard library's ``urllib`` on a thread pool (no new dependency): requests to
hosted models spend their time waiting, so threads give the concurrency. Transient failures (429, 5xx,
connection errors, timeouts, malformed bodies) are retried with exponential backoff; a 401, 403 or 404
means the endpoint, key or model name is wrong, so that generator stops at once and the others go on.
Local backends are imported only when a config names them, so HTTP-only runs never import torch.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator

from prompt_pool.errors import UserError, first_line

from ..formatting import prompt_text
from .config import GeneratorConfig, RequestConfig
from .prompts import Request

FATAL_STATUSES = {401: "check the API key", 403: "check the API key and its permissions",
                  404: "check base_url and the model name"}
RETRY_STATUSES = {408, 409, 429}


class GeneratorFailed(Exception):
    """The generator cannot serve any request (bad key, unknown model, model that does not load)."""


class RequestFailed(Exception):
    """One request failed for good (retries exhausted, or the server rejected it)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


# ---------------------------------------------------------------------------- OpenAI-compatible HTTP
class OpenAIChatClient:
    """Sends chat requests to ``{base_url}/chat/completions`` with retries.

    Args:
        generator (`GeneratorConfig`): endpoint, model, key variable and extra body fields.
        settings (`RequestConfig`): timeout, retries and backoff.
        sleep (`Callable[[float], None]`, defaults to `time.sleep`): how to wait between tries.
    """

    def __init__(self, generator: GeneratorConfig, settings: RequestConfig,
                 sleep: Callable[[float], None] = time.sleep):
        self.generator = generator
        self.settings = settings
        self.sleep = sleep
        self.url = generator.base_url.rstrip("/") + "/chat/completions"
        self.retries_used = 0
        self._lock = threading.Lock()

    def complete(self, request: Request) -> str:
        """The assistant text for ``request``; raises `GeneratorFailed` or `RequestFailed`."""
        last_error = ""
        for attempt in range(self.settings.retries + 1):
            if attempt:
                with self._lock:
                    self.retries_used += 1
            try:
                return self._post_once(request)
            except _Retryable as error:
                last_error = str(error)
                if attempt < self.settings.retries:
                    self.sleep(self._wait(attempt, error.retry_after))
        raise RequestFailed(f"{self.url}: gave up after {self.settings.retries + 1} tries; last error: {last_error}")

    def _post_once(self, request: Request) -> str:
        body = {"model": self.generator.model, "messages": list(request.messages), "temperature": request.temperature,
                "top_p": request.top_p, "max_tokens": request.max_tokens, **self.generator.extra_body}
        headers = {"Content-Type": "application/json"}
        if self.generator.api_key:
            headers["Authorization"] = f"Bearer {self.generator.api_key}"
        http_request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=self.settings.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise self._http_error(error) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise _Retryable(f"connection error: {reason}") from None
        return _assistant_text(payload)

    def _http_error(self, error: urllib.error.HTTPError) -> Exception:
        detail = _error_detail(error)
        where = f"generator {self.generator.name!r}: {self.url} (model {self.generator.model!r})"
        if error.code in FATAL_STATUSES:
            hint = FATAL_STATUSES[error.code]
            if error.code in (401, 403) and self.generator.api_key_env:
                hint += f" in ${self.generator.api_key_env}"
            return GeneratorFailed(f"{where} answered HTTP {error.code} {error.reason}{detail}; {hint}")
        if error.code in RETRY_STATUSES or error.code >= 500:
            return _Retryable(f"HTTP {error.code} {error.reason}{detail}", _retry_after(error))
        return RequestFailed(f"{where} rejected the request: HTTP {error.code} {error.reason}{detail}")

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it is given (both capped)."""
        if retry_after is not None:
            return min(self.settings.backoff_max, retry_after)
        base = min(self.settings.backoff_max, self.settings.backoff * 2**attempt)
        return base * (0.5 + random.random() / 2)


def _assistant_text(payload: bytes) -> str:
    """``choices[0].message.content`` of a chat completion; a body without it is retried."""
    try:
        data = json.loads(payload)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retryable(f"malformed response body: {payload[:120]!r}") from None
    if not isinstance(content, str):
        raise _Retryable(f"malformed response: message content is {type(content).__name__}, not text")
    return content


def _error_detail(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status line is enough when the body cannot be read
        return ""
    try:
        message = json.loads(body).get("error", body)
        message = message.get("message", message) if isinstance(message, dict) else message
    except (ValueError, AttributeError):
        message = body
    message = " ".join(str(message).split())[:200]
    return f" ({message})" if message else ""


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date; plain backoff is good enough


# ---------------------------------------------------------------------------- local models
def request_seed(request: Request) -> int:
    """A sampling seed from the request key, so a local generation is reproducible request by request."""
    return int(hashlib.sha256(request.key.encode()).hexdigest()[:8], 16)


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


class TransformersGenerator:
    """Samples with ``generate`` from a local folder, hub id or LoRA adapter folder, in batches; the model and
    tokenizer are loaded as `paft-rl eval` loads them (`paft_rl.eval.models`).

    Args:
        generator (`GeneratorConfig`): ``model``, ``device``, ``dtype``, ``batch_size``, ``max_tokens``.
    """

    def __init__(self, generator: GeneratorConfig):
        self.generator = generator
        self.model = None
        self.tokenizer = None

    def load(self) -> None:
        import torch

        from ..eval.models import load_hf_model, load_tokenizer, resolve_model

        if self.generator.threads:
            torch.set_num_threads(self.generator.threads)
        try:
            source = resolve_model(self.generator.model)
            self.tokenizer = load_tokenizer(source)
            self.model = load_hf_model(source, self.generator.device, self.generator.dtype)
        except UserError as error:
            raise GeneratorFailed(f"generator {self.generator.name!r}: cannot load model {self.generator.model!r}: "
                                  f"{first_line(error)}") from None

    def prompt_text(self, request: Request) -> str:
        """The chat template applied as for evaluation and training (`formatting.prompt_text`); a model without
        one gets the messages as plain paragraphs."""
        messages = list(request.messages)
        if self.tokenizer.chat_template:
            return prompt_text(self.tokenizer, messages)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, requests: list[Request]) -> Iterator[tuple[Request, str]]:
        """Yield ``(request, text)`` batch by batch (one seed per batch, from its first request)."""
        import torch

        if self.model is None:
            self.load()
        for batch in batches(requests, self.generator.batch_size):
            texts = [self.prompt_text(r) for r in batch]
            inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = inputs.to(self.model.device)
            torch.manual_seed(request_seed(batch[0]))
            sampling = dict(do_sample=True, temperature=batch[0].temperature, top_p=batch[0].top_p)
            if batch[0].temperature <= 0:
                sampling = dict(do_sample=False)
            with torch.no_grad():
                output = self.model.generate(**inputs, max_new_tokens=batch[0].max_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id, **sampling)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            for request, tokens in zip(batch, new_tokens):
                yield request, self.tokenizer.decode(tokens, skip_special_tokens=True)


class VLLMGenerator:
    """Samples with vLLM's offline ``LLM.chat`` (one engine, all requests in one call), the engine started as
    `paft-rl eval --backend vllm` starts it (`paft_rl.eval.backends.vllm_engine`).

    Args:
        generator (`GeneratorConfig`): ``model``, ``max_tokens`` and ``engine_kwargs`` for ``vllm.LLM``.
    """

    def __init__(self, generator: GeneratorConfig):
        self.generator = generator

    def generate(self, requests: list[Request]) -> Iterator[tuple[Request, str]]:
        from ..eval.backends import vllm_engine

        try:
            llm = vllm_engine(f"generator {self.generator.name!r} (backend vllm)", model=self.generator.model,
                              **self.generator.engine_kwargs)
        except UserError as error:
            raise GeneratorFailed(str(error)) from None
        from vllm import SamplingParams

        params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens,
                                 seed=request_seed(r)) for r in requests]
        outputs = llm.chat([list(r.messages) for r in requests], sampling_params=params, use_tqdm=False)
        for request, output in zip(requests, outputs):
            yield request, output.outputs[0].text


LOCAL_BACKENDS = {"transformers": TransformersGenerator, "vllm": VLLMGenerator}


def local_generator(generator: GeneratorConfig):
    return LOCAL_BACKENDS[generator.backend](generator)


def group_by_generator(requests: Iterable[Request]) -> dict[str, list[Request]]:
    groups: dict[str, list[Request]] = {}
    for request in requests:
        groups.setdefault(request.generator, []).append(request)
    return groups
