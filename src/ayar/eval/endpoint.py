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
- a thread pool, ``concurrency`` requests in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


class ResponseCache:
    """Answered requests as JSON lines ``{"key": ..., "response": ...}``; None keeps nothing.

    Appending a line is the only write, so a crash loses at most the line being
    written; a torn last line is ignored when the file is read back.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["response"]
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: str, response: str) -> None:
        with self._lock:
            self._entries[key] = response
            if self.path is None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n")
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

    def __init__(self, config: EndpointConfig, cache_path: str | Path | None = None):
        from openai import OpenAI

        self.config = config
        self.cache = ResponseCache(cache_path)
        # Retries are ours (logged, counted, with the configured backoff), not the client's.
        self.client = OpenAI(base_url=config.base_url, api_key=api_key(config), timeout=config.timeout,
                             max_retries=0)

    def complete(self, messages: Sequence[dict], **params: Any) -> str:
        """The assistant reply to ``messages``; ``params`` go to the API (temperature, max_tokens, ...).

        Raises:
            EndpointError: the request failed after the configured retries, or cannot succeed.
        """
        import openai

        key = cache_key(self.config.base_url, self.config.model, messages, params)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        for attempt in range(self.config.max_retries + 1):
            try:
                response = self.client.chat.completions.create(model=self.config.model, messages=list(messages),
                                                               **params)
                break
            except (openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                retryable = status is None or status in RETRY_STATUS or status >= 500
                if not retryable or attempt == self.config.max_retries:
                    what = f"HTTP {status}" if status is not None else type(exc).__name__
                    tries = f" after {attempt + 1} attempts" if retryable else ""
                    raise EndpointError(f"{self.config.base_url} ({self.config.model}): {what}{tries}: "
                                        f"{_short(exc)}") from None
                time.sleep(self.config.retry_delay * 2**attempt)
        if not response.choices:
            raise EndpointError(f"{self.config.base_url} ({self.config.model}): the response has no choices")
        text = response.choices[0].message.content or ""
        self.cache.put(key, text)
        return text

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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
