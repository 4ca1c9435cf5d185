"""The FastAPI application: OpenAI's endpoints plus an admin API for adapters.

Routes:

- ``GET /v1/models``: the base model, every adapter and every A/B route.
- ``POST /v1/chat/completions``: messages rendered with the chat template.
- ``POST /v1/completions``: a raw text prompt.
- ``GET/POST /admin/adapters``, ``DELETE /admin/adapters/{name}``: list, load, unload adapters.
- ``GET /health``: liveness, queue length (never needs the API key).

A request is validated and tokenised on the event loop (so bad input is
answered at once, without queueing), then handed to the engine's worker. The
response names the model that actually served it in ``model`` and in the
``X-Ayar-Served-By`` header, which matters for A/B routes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ayar.serve import protocol as p
from ayar.serve.engine import Engine, Job
from ayar.serve.models import ModelHost
from ayar.serve.protocol import OpenAIError


class AdapterLoad(BaseModel):
    name: str
    path: str


def create_app(host: ModelHost, engine: Engine, *, api_key: str | None = None, audit=None) -> FastAPI:
    """Build the app; the engine's worker starts with the app and is drained when it stops.

    Args:
        api_key: when set, every /v1 and /admin request needs ``Authorization: Bearer <api_key>``.
        audit: a :class:`ayar.govern.record.ServeAudit`: admin loads pass the release gate and loads and
            unloads are recorded in the audit ledger (None: neither).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        # uvicorn has stopped accepting connections and waited for open requests; finish the queue.
        await asyncio.to_thread(engine.close)
        if audit is not None:  # the ledger then knows nothing is served by this process any more
            await asyncio.to_thread(audit.stopped)

    app = FastAPI(title="ayar serve", lifespan=lifespan)
    app.state.host, app.state.engine, app.state.api_key = host, engine, api_key
    app.state.audit = audit
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.include_router(public)
    app.include_router(protected)
    return app


async def _openai_error(request: Request, exc: OpenAIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return await _openai_error(request, p.validation_error(exc))


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in OpenAI's shape too."""
    error = OpenAIError(exc.status_code, str(exc.detail))
    return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))


def authorise(request: Request) -> None:
    """Require ``Authorization: Bearer <key>`` when the server has an API key."""
    key = request.app.state.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
        raise OpenAIError(401, "Incorrect or missing API key; send it as `Authorization: Bearer <key>`",
                          code="invalid_api_key")


public = APIRouter()
protected = APIRouter(dependencies=[Depends(authorise)])


@public.get("/health")
async def health(request: Request) -> dict:
    return {"status": "ok", "queued": request.app.state.engine.pending()}


@protected.get("/v1/models")
async def models(request: Request) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ayar"}
                                       for name in request.app.state.host.names()]}


@protected.post("/v1/chat/completions")
async def chat_completions(body: p.ChatRequest, request: Request):
    host: ModelHost = request.app.state.host
    host.require(body.model)
    messages = [m.as_record() for m in body.messages]
    try:
        text = host.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # jinja raises for conversations a template refuses (e.g. roles out of order)
        raise OpenAIError(400, f"the chat template cannot render these messages: {exc}", param="messages") from None
    ids = host.tokenizer(text, add_special_tokens=False)["input_ids"]  # the template wrote any BOS
    return await _respond(request, body, ids, chat=True)


@protected.post("/v1/completions")
async def completions(body: p.CompletionRequest, request: Request):
    host: ModelHost = request.app.state.host
    host.require(body.model)
    ids = host.tokenizer(body.prompt, add_special_tokens=True)["input_ids"]
    if not ids:
        raise OpenAIError(400, "the prompt is empty", param="prompt")
    return await _respond(request, body, ids, chat=False)


@protected.get("/admin/adapters")
async def list_adapters(request: Request) -> dict:
    host: ModelHost = request.app.state.host
    return {"adapters": [{"name": n, "path": path} for n, path in host.adapters.items()],
            "routes": [{"name": r.name, "arms": [{"model": m, "weight": w} for m, w in r.arms]}
                       for r in host.routes.values()]}


@protected.post("/admin/adapters", status_code=201)
async def load_adapter(body: AdapterLoad, request: Request) -> dict:
    host: ModelHost = request.app.state.host
    audit = request.app.state.audit
    gate = await run_in_threadpool(_admit, audit, body.path)  # the release gate, before anything is loaded
    # Waits for the request being generated, never for the queue; loading runs off the event loop.
    await run_in_threadpool(_locked, host, host.load_adapter, body.name, body.path)
    if audit is not None:
        await run_in_threadpool(audit.loaded, body.name, body.path, gate, host.base_name)
    return {"id": body.name, "object": "model", "path": body.path}


@protected.delete("/admin/adapters/{name:path}")
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


async def _respond(request: Request, body: p.ChatRequest | p.CompletionRequest, ids: list[int], *, chat: bool):
    """Queue the request, wait until its model is selected, then answer whole or as a stream."""
    host: ModelHost = request.app.state.host
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
    request.app.state.engine.submit(job)
    try:
        kind, *rest = await job.events.get()
    except asyncio.CancelledError:
        job.cancelled.set()
        raise
    if kind == "error":
        raise rest[0]
    served = rest[0]
    headers = {"X-Ayar-Served-By": served, "X-Request-Id": job.request_id}
    if body.stream:
        return StreamingResponse(_sse(job, served, len(ids), chat, body.include_usage),
                                 media_type="text/event-stream", headers=headers)
    return JSONResponse(await _collect(job, served, len(ids), chat), headers=headers)


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
    out = {int(token): value for token, value in (bias or {}).items()}
    for token in out:
        if token >= vocab:
            raise OpenAIError(400, f"logit_bias: token id {token} is outside the vocabulary (size {vocab})",
                              param="logit_bias", code="invalid_value")
    return out


async def _collect(job: Job, served: str, n_prompt: int, chat: bool) -> dict:
    """Wait for the whole reply and build the non-streamed response."""
    parts = []
    try:
        while True:
            kind, *rest = await job.events.get()
            if kind == "text":
                parts.append(rest[0])
            elif kind == "error":
                raise rest[0]
            else:
                finish, n_completion = rest
                build = p.chat_response if chat else p.completion_response
                return build(job.request_id, served, "".join(parts), finish, n_prompt, n_completion)
    finally:
        job.cancelled.set()  # a no-op when finished; stops generation if the client went away


async def _sse(job: Job, served: str, n_prompt: int, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``."""

    def event(obj: dict) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    rid = job.request_id
    try:
        if chat:
            yield event(p.chat_chunk(rid, served, {"role": "assistant", "content": ""}))
        while True:
            kind, *rest = await job.events.get()
            if kind == "text":
                yield event(p.chat_chunk(rid, served, {"content": rest[0]}) if chat
                            else p.completion_chunk(rid, served, rest[0]))
            elif kind == "error":
                yield event(rest[0].body())
                break
            else:
                finish, n_completion = rest
                yield event(p.chat_chunk(rid, served, {}, finish) if chat
                            else p.completion_chunk(rid, served, "", finish))
                if include_usage:
                    obj = "chat.completion.chunk" if chat else "text_completion"
                    yield event(p.usage_chunk(rid, served, obj, n_prompt, n_completion))
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()
