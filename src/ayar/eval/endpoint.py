"""Chat completions from an OpenAI-compatible endpoint, with retries and a disk cache.

Used for hosted or served models as evaluation targets and for the judge. The
official ``openai`` client does the HTTP; this module adds what evaluation
needs around it:

- retries with exponential backoff (``retry_delay * 2**attempt``) on errors that
  may pass: HTTP 5xx, 408, 429, timeouts and lost connections. Other errors
  (a bad request, a wrong key) fail at once;
- a cache: one JSON line per answered request, keyed by the sha256 of
  ``(base_url, model, messages, params)``, so running an evaluation again sends
  no request that was answered before;
- a thread pool, ``concurrency`` requests in flight;
- optionally (``ayar synth``) a rate limiter asked before every request that goes out,
  and the tokens each request used (from the response's ``usage``), kept in the cache
  with the reply so a re-run reports the same totals without sending anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ayar.errors import AyarError
from ayar.eval.config import EndpointConfig

RETRY_STATUS = {408, 429}  # and every 5xx


class EndpointError(AyarError):
    """A request failed for good (after retries, or with an error that retrying cannot fix)."""


def cache_key(base_url: str, model: str, messages: Sequence[dict], params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``[base_url, model, messages, params]``.

    The URL is part of the key because two servers may serve different weights
    under one model name (vLLM names a model by what it was asked to serve).
    """
    text = json.dumps([base_url.rstrip("/"), model, list(messages), params], sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Completion:
    """One answered request: the reply, its token usage (None when the server sent none), whether it came
    from the cache, and when the server answered it (UTC, ISO 8601; kept in the cache)."""

    text: str
    usage: dict[str, int] | None
    cached: bool
    answered_at: str | None = None


class Limiter(Protocol):
    """A rate limit asked before each request leaves (see :class:`ayar.synth.limiter.RateLimiter`)."""

    def acquire(self, tokens: int) -> list: ...

    def settle(self, grant: list, tokens: int) -> None: ...


class ResponseCache:
    """Answered requests as JSON lines ``{"key": ..., "response": ..., "usage": ..., "at": ...}``; None keeps
    nothing.

    Appending a line is the only write, so a crash loses at most the line being
    written; a torn last line is ignored when the file is read back.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    if isinstance(entry["response"], str):
                        self._entries[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        entry = self.entry(key)
        return entry["response"] if entry else None

    def entry(self, key: str) -> dict | None:
        """The stored line of ``key`` (``response``, and ``usage`` and ``at`` when recorded), or None."""
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, response: str, usage: dict[str, int] | None = None, at: str | None = None) -> None:
        entry = {"key": key, "response": response, **({"usage": usage} if usage else {}), **({"at": at} if at else {})}
        with self._lock:
            self._entries[key] = entry
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                fh.flush()


def api_key(config: EndpointConfig) -> str:
    """The API key from the environment variable ``config.api_key_env``.

    Raises:
        AyarError: the variable is named but not set.
    """
    if config.api_key_env is None:
        return "unused"  # the client requires a string; servers without authentication ignore it
    value = os.environ.get(config.api_key_env)
    if not value:
        raise AyarError(f"the endpoint {config.base_url} needs an API key in the environment variable "
                        f"{config.api_key_env}; set it, or set api_key_env: null for a server without one")
    return value


class ChatEndpoint:
    """One OpenAI-compatible model: ``complete`` one conversation, or ``complete_many`` in parallel."""

    def __init__(self, config: EndpointConfig, cache_path: str | Path | None = None, *,
                 limiter: Limiter | None = None, sleep: Callable[[float], None] = time.sleep):
        from openai import OpenAI

        self.config = config
        self.cache = ResponseCache(cache_path)
        self.limiter = limiter
        self.sleep = sleep  # waits between retries (tests pass a recorder)
        self.attempts = 0  # HTTP requests sent, retries included
        self._lock = threading.Lock()
        # Retries are ours (logged, counted, with the configured backoff), not the client's.
        self.client = OpenAI(base_url=config.base_url, api_key=api_key(config), timeout=config.timeout,
                             max_retries=0)

    def complete(self, messages: Sequence[dict], **params: Any) -> str:
        """The assistant reply to ``messages``; ``params`` go to the API (temperature, max_tokens, ...).

        Raises:
            EndpointError: the request failed after the configured retries, or cannot succeed.
        """
        return self.complete_full(messages, **params).text

    def complete_full(self, messages: Sequence[dict], **params: Any) -> Completion:
        """:meth:`complete` with the reply's token usage and whether it came from the cache.

        Raises:
            EndpointError: the request failed after the configured retries, or cannot succeed.
        """
        import openai

        from ayar.govern.manifest import utc_now

        key = cache_key(self.config.base_url, self.config.model, messages, params)
        entry = self.cache.entry(key)
        if entry is not None:
            return Completion(entry["response"], entry.get("usage"), True, entry.get("at"))
        # booked with the rate limiter before sending: ~3 characters a prompt token, plus the longest reply allowed
        estimate = sum(len(str(m.get("content") or "")) for m in messages) // 3 + int(params.get("max_tokens") or 0)
        for attempt in range(self.config.max_retries + 1):
            grant = self.limiter.acquire(estimate) if self.limiter is not None else None
            try:
                with self._count():
                    response = self.client.chat.completions.create(model=self.config.model,
                                                                   messages=list(messages), **params)
                break
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                retryable = status is None or status in RETRY_STATUS or status >= 500
                if not retryable or attempt == self.config.max_retries:
                    what = f"HTTP {status}" if status is not None else type(exc).__name__
                    tries = f" after {attempt + 1} attempts" if retryable else ""
                    raise EndpointError(f"{self.config.base_url} ({self.config.model}): {what}{tries}: "
                                        f"{_short(exc)}") from None
                self.sleep(self.config.retry_delay * 2**attempt)
        if not response.choices:
            raise EndpointError(f"{self.config.base_url} ({self.config.model}): the response has no choices")
        text = response.choices[0].message.content or ""
        usage = _usage(response)
        if grant is not None:
            self.limiter.settle(grant, usage["total_tokens"] if usage else estimate)
        at = utc_now()
        self.cache.put(key, text, usage, at)
        return Completion(text, usage, False, at)

    @contextmanager
    def _count(self) -> Iterator[None]:
        with self._lock:
            self.attempts += 1
        yield

    def complete_many(self, conversations: Sequence[Sequence[dict]], **params: Any) -> list[str | EndpointError]:
        """``complete`` for each conversation, ``concurrency`` at a time; a failure is returned in its place."""
        from ayar.govern.external import check_outgoing

        check_outgoing(self.config.base_url, self.config.model, conversations)  # no PII to other machines

        def one(messages: Sequence[dict]) -> str | EndpointError:
            try:
                return self.complete(messages, **params)
            except EndpointError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(one, conversations))

    def complete_requests(self, requests: Sequence[tuple[Sequence[dict], dict[str, Any]]],
                          progress: Callable[[], None] | None = None) -> list[Completion | EndpointError]:
        """:meth:`complete_full` for each ``(messages, params)``, ``concurrency`` at a time; a failure is
        returned in its place. ``progress`` is called after each request (answered, cached or failed).

        Raises:
            AyarError: the batch is bound for another machine and holds personal data the run does not
                allow sending (:func:`ayar.govern.external.check_outgoing`); nothing was sent.
        """
        from ayar.govern.external import check_outgoing

        check_outgoing(self.config.base_url, self.config.model, [m for m, _ in requests])  # no PII elsewhere

        def one(request: tuple[Sequence[dict], dict[str, Any]]) -> Completion | EndpointError:
            try:
                return self.complete_full(request[0], **request[1])
            except EndpointError as exc:
                return exc
            finally:
                if progress is not None:
                    progress()

        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            return list(pool.map(one, requests))


def generate_with_endpoint(endpoint: ChatEndpoint, conversations: Sequence[list[dict]], *, max_new_tokens: int,
                           temperature: float, top_p: float, seed: int) -> list[str]:
    """Replies of an endpoint target, with the same decoding settings as a local model.

    Raises:
        EndpointError: any request failed (the answered ones stay cached, so a re-run resumes).
    """
    params = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
    replies = endpoint.complete_many(conversations, **params)
    failed = [i for i, r in enumerate(replies) if isinstance(r, EndpointError)]
    if failed:
        raise EndpointError(f"{len(failed)} of {len(replies)} requests failed; first (example {failed[0] + 1}): "
                            f"{replies[failed[0]]}")
    return [str(r).strip() for r in replies]


def _usage(response: Any) -> dict[str, int] | None:
    """``prompt_tokens``, ``completion_tokens`` and ``total_tokens`` of a response, or None when not reported."""
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
