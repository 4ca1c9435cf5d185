"""The FastAPI application: OpenAI's endpoints plus an admin API for adapters.

Routes:

- ``GET /v1/models``: the base model, every adapter and every A/B route.
- ``POST /v1/chat/completions``: messages rendered with the chat template.
- ``POST /v1/completions``: a raw text prompt.
- ``GET/POST /admin/adapters``, ``DELETE /admin/adapters/{name}``: list, load, unload adapters.
- ``GET /health``: liveness, queue length (never needs the API key).
- ``GET /metrics``: Prometheus metrics (:mod:`ayar.serve.observe`; behind the API key like the OpenAI routes).
- ``POST /v1/feedback``: a user's verdict on a response (thumbs, a score, a correction), joined to the
  model that served it and written to the request log (on with ``--request-log``).

Every request first passes :class:`ayar.serve.guard.Guard`, which checks the
key for its path and caps the body before anything is read. A request is then
validated on the event loop (bad input is answered at once, without queueing)
and tokenised on a worker thread (a huge prompt never blocks other requests),
then handed to the engine's worker. The response names the model that actually
served it in ``model`` and in the ``X-Ayar-Served-By`` header, which matters for
A/B routes. A client that goes away cancels its request, queued or generating.
Unexpected failures answer a generic 500; the details go to the server log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ayar.chat.tokenize import ConversationError, encode_text, render
from ayar.serve import protocol as p
from ayar.serve.engine import Engine, Job
from ayar.serve.guard import Guard
from ayar.serve.models import ModelHost
from ayar.serve.observe import CONTENT_TYPE, Observer, ServeMetrics, Trace
from ayar.serve.policy import adapter_path
from ayar.serve.protocol import OpenAIError

log = logging.getLogger("ayar.serve")
MAX_BODY_BYTES = 2 * 1024 * 1024  # a 2 MiB JSON body holds far more text than any served context
PROBE_CHARS_PER_TOKEN = 8  # a prompt longer than this many characters per context token is probed first
PROBE_SLACK = 64  # tokens a cut at the probe's end may add


class AdapterLoad(BaseModel):
    name: str = Field(max_length=128)
    path: str = Field(max_length=4096)


class Feedback(BaseModel):
    """A user's verdict on one response: thumbs, a score in [0, 1], a corrected answer (at least one)."""

    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(max_length=128)
    thumbs: Literal["up", "down"] | None = None
    score: float | None = Field(None, ge=0.0, le=1.0, allow_inf_nan=False)
    correction: str | None = Field(None, min_length=1, max_length=p.MAX_TEXT)
    comment: str | None = Field(None, max_length=4096)

    @model_validator(mode="after")
    def _something(self) -> Feedback:
        if self.thumbs is None and self.score is None and self.correction is None:
            raise ValueError("send thumbs (up or down), a score between 0 and 1, or a correction")
        return self

    def kinds(self) -> list[str]:
        return [k for k, v in (("up", self.thumbs == "up"), ("down", self.thumbs == "down"),
                               ("score", self.score is not None), ("correction", self.correction is not None)) if v]


def create_app(host: ModelHost, engine: Engine, *, api_key: str | None = None, admin_key: str | None = None,
               admin: bool = True, adapter_roots: Sequence[Path] = (), max_body_bytes: int = MAX_BODY_BYTES,
               docs: bool = False, audit=None, request_log=None) -> FastAPI:
    """Build the app; the engine's worker starts with the app and is drained when it stops.

    Args:
        api_key: when set, every request but ``/health`` and ``/admin`` needs
            ``Authorization: Bearer <api_key>``.
        admin_key: the Bearer key of ``/admin``; without one the admin API is open on a
            server without an API key and off on a server with one.
        admin: False switches the admin API off.
        adapter_roots: resolved folders under which ``POST /admin/adapters`` may load.
        max_body_bytes: largest request body (413 above it, before it is read).
        docs: serve ``/docs`` and ``/openapi.json`` (behind the API key).
        audit: a :class:`ayar.govern.record.ServeAudit`: admin loads pass the release gate and loads and
            unloads are recorded in the audit ledger (None: neither).
        request_log: a :class:`ayar.serve.request_log.RequestLog` for requests and feedback (None: no log,
            and ``POST /v1/feedback`` is off).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        if request_log is not None:
            request_log.start()
        yield
        # uvicorn has stopped accepting connections and waited for open requests; finish the queue.
        await asyncio.to_thread(engine.close)
        if request_log is not None:
            await asyncio.to_thread(request_log.close)
        if audit is not None:  # the ledger then knows nothing is served by this process any more
            await asyncio.to_thread(audit.stopped)

    off = {} if docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="ayar serve", lifespan=lifespan, **off)
    app.state.host, app.state.engine, app.state.adapter_roots = host, engine, list(adapter_roots)
    app.state.audit = audit
    app.state.observer = Observer(ServeMetrics(engine.pending), request_log)
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(routes)
    app.add_middleware(Guard, api_key=api_key, admin_key=admin_key,
                       admin=admin and (admin_key is not None or api_key is None), max_body_bytes=max_body_bytes)
    return app


async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _openai_error(request, p.validation_error(exc))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's shape too."""
    error = OpenAIError(exc.status_code, str(exc.detail))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug or a failure of the machine: the client learns nothing internal; the log gets the traceback."""
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(p.internal_error().body(), status_code=500)


routes = APIRouter()  # authentication is the Guard middleware's, before any body is read


@routes.get("/health")
async def health(request: Request) -> dict:
    return {"status": "ok", "queued": request.app.state.engine.pending()}


@routes.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.observer.metrics.render(), media_type=CONTENT_TYPE)


@routes.post("/v1/feedback")
async def feedback(body: Feedback, request: Request) -> dict:
    observer: Observer = request.app.state.observer
    if observer.log is None:
        raise OpenAIError(404, "feedback is off on this server: start `ayar serve` with --request-log FILE to "
                          "record it", code="feedback_off")
    served = observer.served(body.response_id)
    if served is None:
        raise OpenAIError(404, f"no response with id {body.response_id!r} was served by this server (or it was "
                          "too long ago)", param="response_id", code="response_not_found")
    observer.feedback(served, body.kinds())
    observer.log.feedback({"id": body.response_id, "model": served.model, "served_by": served.served_by,
                           "route": served.route, "thumbs": body.thumbs, "score": body.score,
                           "correction": body.correction, "comment": body.comment})
    return {"id": body.response_id, "object": "feedback", "served_by": served.served_by, "recorded": True}


@routes.get("/v1/models")
async def models(request: Request) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ayar"}
                                       for name in request.app.state.host.names()]}


@routes.post("/v1/chat/completions")
async def chat_completions(body: p.ChatRequest, request: Request):
    host: ModelHost = request.app.state.host
    host.require(body.model)
    messages = [m.as_record() for m in body.messages]
    ids = await run_in_threadpool(chat_prompt_ids, host.tokenizer, messages, host.context_length)
    return await _respond(request, body, ids, messages, chat=True)


def chat_prompt_ids(tokenizer, messages: list[dict], context: int) -> list[int]:
    """Render and tokenise a chat prompt (special-token text in contents stays text); runs off the event loop.

    Raises:
        OpenAIError: 400 when the template refuses the messages, or the prompt is longer than the context.
    """
    try:
        text = render(tokenizer, messages, add_generation_prompt=True)
    except ConversationError as exc:
        raise OpenAIError(400, str(exc), param="messages") from None
    except Exception:  # a template raising something else (e.g. raise_exception with a non-string)
        raise OpenAIError(400, "the chat template cannot render these messages", param="messages") from None
    _probe_length(tokenizer, text, context, "messages")
    try:
        return encode_text(tokenizer, messages, text, add_generation_prompt=True)[0]  # the template wrote any BOS
    except ConversationError as exc:
        raise OpenAIError(400, str(exc), param="messages") from None


def text_prompt_ids(tokenizer, prompt: str, context: int) -> list[int]:
    """Tokenise a raw completion prompt (the caller writes it whole, control tokens included); off the loop."""
    _probe_length(tokenizer, prompt, context, "prompt")
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def _probe_length(tokenizer, text: str, context: int, param: str) -> None:
    """Refuse a prompt whose first ``PROBE_CHARS_PER_TOKEN * context`` characters already overflow the context.

    A long prompt is not tokenised whole just to be refused: its prefix's token
    count (less what cutting a word in two may add) is a lower bound on the whole's.
    """
    limit = PROBE_CHARS_PER_TOKEN * context
    if len(text) <= limit:
        return
    n = len(tokenizer(text[:limit], add_special_tokens=False, split_special_tokens=True)["input_ids"])
    if n - PROBE_SLACK >= context:
        raise OpenAIError(400, f"This model's maximum context length is {context} tokens; the prompt has more "
                          f"than {n - PROBE_SLACK} tokens. Shorten the prompt.", param=param,
                          code="context_length_exceeded")


@routes.post("/v1/completions")
async def completions(body: p.CompletionRequest, request: Request):
    host: ModelHost = request.app.state.host
    host.require(body.model)
    ids = await run_in_threadpool(text_prompt_ids, host.tokenizer, body.prompt, host.context_length)
    if not ids:
        raise OpenAIError(400, "the prompt is empty", param="prompt")
    return await _respond(request, body, ids, body.prompt, chat=False)


@routes.get("/admin/adapters")
async def list_adapters(request: Request) -> dict:
    host: ModelHost = request.app.state.host
    # Names only: where adapters lie on the server's disk is not the client's business.
    return {"adapters": [{"name": n} for n in host.adapters],
            "routes": [{"name": r.name, "arms": [{"model": m, "weight": w} for m, w in r.arms]}
                       for r in host.routes.values()]}


@routes.post("/admin/adapters", status_code=201)
async def load_adapter(body: AdapterLoad, request: Request) -> dict:
    host: ModelHost = request.app.state.host
    folder = adapter_path(body.path, request.app.state.adapter_roots)
    audit = request.app.state.audit
    gate = await run_in_threadpool(_admit, audit, str(folder))  # the release gate, before anything is loaded
    # Waits for the request being generated, never for the queue; loading runs off the event loop.
    await run_in_threadpool(_locked, host, host.load_adapter, body.name, str(folder))
    if audit is not None:
        await run_in_threadpool(audit.loaded, body.name, str(folder), gate, host.base_name)
    return {"id": body.name, "object": "model", "path": body.path}


@routes.delete("/admin/adapters/{name:path}")
async def unload_adapter(name: str, request: Request) -> dict:
    host: ModelHost = request.app.state.host
    await run_in_threadpool(_locked, host, host.unload_adapter, name)
    if request.app.state.audit is not None:
        await run_in_threadpool(request.app.state.audit.unloaded, name)
    return {"id": name, "object": "model", "deleted": True}


def _admit(audit, path: str):
    """The release gate's decision for ``path`` (None without an audit); a failing gate is HTTP 403."""
    from ayar.errors import AyarError

    try:
        return audit.admit(path) if audit is not None else None
    except AyarError as exc:
        raise OpenAIError(403, str(exc), param="path") from None


def _locked(host: ModelHost, fn, *args) -> None:
    with host.lock:
        fn(*args)


async def _respond(request: Request, body: p.ChatRequest | p.CompletionRequest, ids: list[int],
                   prompt: list[dict] | str, *, chat: bool):
    """Queue the request, wait until its model is selected, then answer whole or as a stream."""
    host: ModelHost = request.app.state.host
    observer: Observer = request.app.state.observer
    job = Job(
        request_id=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
        model=body.model,
        prompt_ids=ids,
        max_tokens=_token_budget(len(ids), body.token_limit, host.context_length),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        stops=body.stop or [],
        logit_bias=_logit_bias(body.logit_bias, len(host.tokenizer)),
        loop=asyncio.get_running_loop(),
    )
    trace = Trace(job.request_id, body.model, body.model if body.model in host.routes else None, prompt, len(ids))
    try:
        request.app.state.engine.submit(job)
    except OpenAIError:
        observer.close(trace, "rejected")
        raise
    # The client may leave while the job waits or (non-streamed) generates: that cancels the job, so
    # the worker skips it or stops generating. A stream is cancelled by Starlette when its client leaves.
    watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
    try:
        kind, *rest = await job.events.get()
        if kind == "error":
            observer.close(trace, "error")
            raise rest[0]
        served = trace.served_by = rest[0]
        headers = {"X-Ayar-Served-By": served, "X-Request-Id": job.request_id}
        if body.stream:
            watcher.cancel()
            return StreamingResponse(_sse(job, trace, observer, chat, body.include_usage),
                                     media_type="text/event-stream", headers=headers)
        return JSONResponse(await _collect(job, trace, observer, chat), headers=headers)
    except BaseException:
        job.cancelled.set()
        observer.close(trace, "cancelled")  # a no-op when it was closed already
        raise
    finally:
        watcher.cancel()


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    """Set ``job.cancelled`` when the client disconnects (the body has been read, so only that can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancelled.set()
            return


def _token_budget(n_prompt: int, requested: int | None, context: int) -> int:
    """How many tokens may be generated: as asked, or what the context leaves when not asked.

    Raises:
        OpenAIError: 400 when the prompt, or prompt plus ``requested``, exceeds the context.
    """
    if n_prompt >= context or (requested is not None and n_prompt + requested > context):
        asked = f" plus max_tokens {requested}" if requested is not None else ""
        raise OpenAIError(400, f"This model's maximum context length is {context} tokens; the prompt has "
                          f"{n_prompt} tokens{asked}. Shorten the prompt or lower max_tokens.",
                          param="messages", code="context_length_exceeded")
    return requested if requested is not None else context - n_prompt


def _logit_bias(bias: dict[str, float] | None, vocab: int) -> dict[int, float]:
    out = {int(token): value for token, value in (bias or {}).items()}  # keys checked to be ASCII digits
    for token in out:
        if token >= vocab:
            raise OpenAIError(400, f"logit_bias: token id {token} is outside the vocabulary (size {vocab})",
                              param="logit_bias", code="invalid_value")
    return out


async def _collect(job: Job, trace: Trace, observer: Observer, chat: bool) -> dict:
    """Wait for the whole reply and build the non-streamed response."""
    try:
        while True:
            kind, *rest = await job.events.get()
            if kind == "text":
                trace.text(rest[0])
            elif kind == "error":
                observer.close(trace, "error")
                raise rest[0]
            else:
                finish, n_completion = rest
                observer.close(trace, "ok", finish, n_completion)
                build = p.chat_response if chat else p.completion_response
                return build(job.request_id, trace.served_by, "".join(trace.parts), finish, trace.n_prompt,
                             n_completion)
    finally:
        job.cancelled.set()  # a no-op when finished; stops generation if the client went away
        observer.close(trace, "cancelled")


async def _sse(job: Job, trace: Trace, observer: Observer, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""

    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    rid, served, n_prompt = job.request_id, trace.served_by, trace.n_prompt
    try:
        if chat:
            yield event(p.chat_chunk(rid, served, {"role": "assistant", "content": ""}))
        while True:
            kind, *rest = await job.events.get()
            if kind == "text":
                trace.text(rest[0])
                yield event(p.chat_chunk(rid, served, {"content": rest[0]}) if chat
                            else p.completion_chunk(rid, served, rest[0]))
            elif kind == "error":
                observer.close(trace, "error")
                yield event(rest[0].body())
                break
            else:
                finish, n_completion = rest
                observer.close(trace, "ok", finish, n_completion)
                yield event(p.chat_chunk(rid, served, {}, finish) if chat
                            else p.completion_chunk(rid, served, "", finish))
                if include_usage:
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    yield event(p.usage_chunk(rid, served, obj, n_prompt, n_completion))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()
        observer.close(trace, "cancelled")
