"""One OpenAI-compatible chat-completions server: its client, event loop, concurrency bound and faults.

The engine is synchronous and asks one round at a time; the server wants many
requests in flight. A :class:`ServerConnection` owns an asyncio loop on a
background thread with one ``openai.AsyncOpenAI`` client on it: callers on any
thread hand it coroutines (:meth:`ServerConnection.run`), and one semaphore
bounds the requests in flight across every image being walked.

Retries with exponential backoff on timeouts, connection errors, 408/409/429
and 5xx are the ``openai`` client's own (``max_retries``, honouring
``Retry-After``); what is left after them becomes :class:`ServerError`, one
line naming the server and what to do.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import urlparse

from explainer.answerers.base import AnswererError
from explainer.answerers.server.scoring import TopToken
from explainer.errors import UsageError

T = TypeVar("T")

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
TOP_LOGPROBS = 20  # the most vLLM and OpenAI return


class ServerError(AnswererError):
    """The server could not answer (down, refused, unknown model, no logprobs...). One line."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status of the last answer, None when there was none


@dataclass(frozen=True)
class ServerSettings:
    url: str
    model: str | None = None  # None: the server's only model
    api_key_env: str | None = None  # None: OPENAI_API_KEY if set, else no key
    concurrency: int = 16
    timeout: float = 60.0
    retries: int = 3
    images_in_flight: int | None = None  # None: concurrency // 4, at least 1
    tokenizer: str | None = None  # a local tokenizer for options' first tokens; None: ask the server


@dataclass(frozen=True)
class Completion:
    """One chat completion as the answerer needs it."""

    text: str
    top: tuple[TopToken, ...]  # the first generated token's top log-probabilities (empty: none returned)
    logprobs_returned: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens served from the server's prefix cache, when reported
    seconds: float = 0.0


def normalise_url(url: str) -> str:
    """``http(s)://host[:port]/path`` without a trailing slash; a bare host gets ``/v1``."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--vlm-server {url!r}: give an http(s) URL such as http://127.0.0.1:8000/v1")
    path = parsed.path.rstrip("/")
    return f"{parsed.scheme}://{parsed.netloc}{path or '/v1'}"


def api_key(settings: ServerSettings) -> str:
    name = settings.api_key_env
    if name is not None:
        value = os.environ.get(name)
        if not value:
            raise UsageError(f"--vlm-api-key-env {name}: the environment variable {name} is not set")
        return value
    # vLLM/SGLang started without --api-key accept any key; the client needs a non-empty one.
    return os.environ.get(DEFAULT_API_KEY_ENV) or "none"


class ServerConnection:
    """The client and its loop; :meth:`complete` is one request, :meth:`run` runs coroutines from sync code."""

    def __init__(self, settings: ServerSettings) -> None:
        if settings.concurrency < 1:
            raise UsageError("--vlm-concurrency must be at least 1")
        if settings.timeout <= 0 or settings.retries < 0:
            raise UsageError("--vlm-timeout must be positive and --vlm-retries at least 0")
        try:
            import openai
        except ImportError:
            raise UsageError("--vlm-server needs the openai client: pip install -e '.[serve]'") from None
        self.settings = settings
        self.url = normalise_url(settings.url)
        self.model = settings.model or ""
        self._openai = openai
        self._key = api_key(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vlm-server-loop", daemon=True)
        self._thread.start()
        self._client = self.run(self._make_client())
        self._semaphore = self.run(self._make_semaphore())
        self.closed = False

    async def _make_client(self):
        return self._openai.AsyncOpenAI(base_url=self.url, api_key=self._key, timeout=self.settings.timeout,
                                        max_retries=self.settings.retries)

    async def _make_semaphore(self) -> asyncio.Semaphore:
        return asyncio.Semaphore(self.settings.concurrency)

    @property
    def root(self) -> str:
        """The server's root (vLLM's /tokenize and /metrics live there, not under /v1)."""
        return self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url

    # -- running coroutines --------------------------------------------------------------

    def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the connection's loop and wait for it (from any thread but the loop's)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def gather(self, factories: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run all at once (bounded by the semaphore); results in order; the first failure is raised."""

        async def all_of():
            return await asyncio.gather(*(f() for f in factories))

        return list(self.run(all_of())) if factories else []

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.run(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    # -- requests -----------------------------------------------------------------------

    async def complete(self, messages: list[dict], *, max_tokens: int, logprobs: bool) -> Completion:
        """One chat completion, greedy; with ``logprobs`` the first token's top 20 alternatives."""
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if logprobs else {}
        async with self._semaphore:
            start = time.perf_counter()
            try:
                response = await self._client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=0.0, n=1, **extra)
            except self._openai.OpenAIError as exc:
                raise self.error(exc) from None
            seconds = time.perf_counter() - start
        return _completion(response, seconds)

    async def models(self) -> list[str]:
        try:
            page = await self._client.models.list()
        except self._openai.OpenAIError as exc:
            raise self.error(exc) from None
        return [m.id for m in page.data]

    async def post_root(self, path: str, body: dict) -> Any:
        """POST JSON to a path at the server's root (e.g. vLLM's /tokenize); the parsed JSON answer."""
        async with self._semaphore:
            try:
                return await self._client.post(self.root + path, body=body, cast_to=object)
            except self._openai.OpenAIError as exc:
                raise self.error(exc) from None

    def error(self, exc: Exception) -> ServerError:
        return ServerError(self.describe(exc), getattr(exc, "status_code", None))

    def describe(self, exc: Exception) -> str:
        """One line for a failed request, after the client's retries."""
        o = self._openai
        where = f"VLM server {self.url}"
        retried = f" (after {self.settings.retries} retries)" if self.settings.retries else ""
        if isinstance(exc, o.APITimeoutError):
            return f"{where} did not answer within {self.settings.timeout:g} s{retried}; raise --vlm-timeout or check the server"
        if isinstance(exc, o.APIConnectionError):
            return f"cannot reach the {where}{retried}: is it running? ({_cause(exc)})"
        if isinstance(exc, o.AuthenticationError):
            return f"{where} refused the API key (401): set OPENAI_API_KEY or name the variable with --vlm-api-key-env"
        if isinstance(exc, o.NotFoundError):
            return f"{where} answered 404 for model {self.model!r}: {_message(exc)} (is the model name right, and the URL's /v1?)"
        if isinstance(exc, o.RateLimitError):
            return f"{where} kept answering 429 (rate limit){retried}: lower --vlm-concurrency"
        if isinstance(exc, o.APIStatusError):
            return f"{where} answered {exc.status_code}{retried if exc.status_code >= 500 else ''}: {_message(exc)}"
        return f"{where}: {type(exc).__name__}: {_message(exc)}"


def _completion(response, seconds: float) -> Completion:
    if not getattr(response, "choices", None):
        raise ServerError("the VLM server returned a completion with no choices")
    choice = response.choices[0]
    text = (choice.message.content or "") if choice.message is not None else ""
    content = getattr(choice.logprobs, "content", None) if choice.logprobs is not None else None
    top: tuple[TopToken, ...] = ()
    if content:
        top = _top_tokens(content[0].top_logprobs or ())
    usage = getattr(response, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    return Completion(
        text=text, top=top, logprobs_returned=bool(top),
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        cached_tokens=int(cached) if cached is not None else None, seconds=seconds,
    )


def _top_tokens(entries) -> tuple[TopToken, ...]:
    """The first TOP_LOGPROBS entries that are a text and a finite log-probability at most 0; a server is not trusted."""
    out = []
    for entry in list(entries)[:TOP_LOGPROBS]:
        token, logprob = getattr(entry, "token", None), getattr(entry, "logprob", None)
        try:
            value = float(logprob)
        except (TypeError, ValueError):
            continue
        if isinstance(token, str) and math.isfinite(value) and value <= 1e-6:
            out.append(TopToken(token, value))
    return tuple(out)


def _message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else None
        if msg:
            return " ".join(str(msg).split())[:300]
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _cause(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    return " ".join(str(cause or exc).split())[:200] or type(exc).__name__


__all__ = ["Completion", "ServerConnection", "ServerError", "ServerSettings", "TOP_LOGPROBS", "normalise_url", "api_key"]

