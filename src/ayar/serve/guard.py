"""The server's gate: authentication and a body-size cap, before any request body is read.

:class:`Guard` is a plain ASGI middleware in front of the whole application. For
each HTTP request it decides from the path and headers alone:

- ``/health`` is open (a liveness probe needs no key);
- ``/admin/...`` needs the admin key, a different secret from the inference key
  (403 when the admin API is off, which it is when the server has an API key
  but no admin key: the inference key never grants admin rights);
- every other path (the OpenAI routes, and ``/docs`` / ``/openapi.json`` when they
  are switched on) needs the API key when the server has one.

A refused request is answered 401 (or 403) without calling ``receive``: an
unauthenticated client cannot make the server read, buffer or parse a single
byte of its body. An authenticated body is read here, up to ``max_body_bytes``
(413 as soon as the declared ``Content-Length`` or the bytes received pass it),
then handed to the application, which sees an ordinary request; later
``receive`` calls (the client disconnecting) pass straight through.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


def key_matches(header: str, key: str) -> bool:
    """True when an ``Authorization`` header is ``Bearer <key>`` (compared in constant time)."""
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def error_body(status: int, message: str, code: str, type: str = "invalid_request_error") -> bytes:
    """OpenAI's error object as JSON bytes."""
    return json.dumps({"error": {"message": message, "type": type, "param": None, "code": code}}).encode()


async def send_error(send: Send, status: int, message: str, code: str, headers: list | None = None) -> None:
    body = error_body(status, message, code)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Authenticate by path, then read the body up to a cap, before the application runs.

    Args:
        app: the ASGI application behind the gate.
        api_key: the Bearer key for every path but ``/health`` and ``/admin``; None: open.
        admin_key: the Bearer key for ``/admin/...``; None leaves the admin API open, which is
            allowed only on a server without an API key.
        admin: False answers every ``/admin`` path 403.
        max_body_bytes: the largest request body accepted (413 above it).

    Raises:
        ValueError: an open admin API on a server that has an API key.
    """

    def __init__(self, app: ASGIApp, *, api_key: str | None, admin_key: str | None, admin: bool,
                 max_body_bytes: int):
        if admin and admin_key is None and api_key is not None:
            raise ValueError("an admin API on a server with an API key needs its own admin key")
        self.app, self.api_key, self.admin_key, self.admin = app, api_key, admin_key, admin
        self.max_body_bytes = max_body_bytes

    def required_key(self, path: str) -> str | None | bool:
        """The key a path needs; None when open; False when the path is switched off."""
        if path in OPEN_PATHS:
            return None
        if path == "/admin" or path.startswith("/admin/"):
            return self.admin_key if self.admin else False
        return self.api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = self.required_key(scope.get("path", ""))
        if key is False:
            await send_error(send, 403, "the admin API is off: start `ayar serve` with --admin-key-env VAR "
                             "(a key other than the API key) to load and unload adapters", "admin_disabled")
            return
        if key is not None and not key_matches(headers.get("authorization", ""), key):
            which = "admin key" if scope["path"].startswith("/admin") else "API key"
            await send_error(send, 401, f"Incorrect or missing {which}; send it as `Authorization: Bearer <key>`",
                             "invalid_api_key", [(b"www-authenticate", b"Bearer")])
            return
        declared = headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > self.max_body_bytes:
            await send_error(send, 413, self._too_large(), "request_too_large")
            return
        body = await self._read_body(receive)
        if body is None:
            await send_error(send, 413, self._too_large(), "request_too_large")
            return
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self) -> str:
        return f"the request body is larger than this server accepts ({self.max_body_bytes} bytes)"

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it passes the cap (the rest is never read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
