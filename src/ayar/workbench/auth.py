"""Who may use the workbench: a token login beyond loopback, and checks against other web pages.

The rules follow ``ayar serve``'s (:mod:`ayar.serve.policy`): on a loopback address
the workbench is open to this machine's user; bound anywhere else it needs a token
(``--token-env VAR``), unless ``--insecure``. With a token, every page but the login
page, the static files and the raters' own links (``/rate/<run>/<rater-token>``,
which show nothing but the blinded items) needs the session cookie set by logging
in, or ``Authorization: Bearer <token>``.

Two checks guard a browser that also visits other sites: a request whose ``Host``
is not this server's own (DNS rebinding) is refused on loopback, and a form or API
call whose ``Origin`` is another site (cross-site request forgery) is refused.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from ayar.errors import AyarError
from ayar.serve.guard import key_matches
from ayar.serve.policy import is_loopback

COOKIE = "ayar_ui"
OPEN_PREFIXES = ("/login", "/static/", "/rate/")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def check_bind(host: str, *, has_token: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without a token.

    Raises:
        AyarError: ``host`` is not loopback, there is no token and ``insecure`` is off.
    """
    if has_token or insecure or is_loopback(host):
        return
    raise AyarError(f"--host {host}: refusing to open the workbench beyond this machine without a token; pass "
                    "--token-env VAR (users then log in with it), or --insecure if every host that can reach the "
                    "port is trusted")


def _plain(status: int, text: str, headers: list | None = None):
    body = text.encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", str(len(body)).encode()), *(headers or [])]}
    return start, {"type": "http.response.body", "body": body}


class Gate:
    """ASGI middleware: host and origin checks, then the token (when there is one).

    Args:
        token: the login token; None: open (loopback only, checked by :func:`check_bind`).
        loopback: the server listens on a loopback address (then ``Host`` must be loopback too).
    """

    def __init__(self, app, *, token: str | None, loopback: bool):
        self.app, self.token, self.loopback = app, token, loopback

    def authorised(self, headers: dict[str, str]) -> bool:
        if self.token is None:
            return True
        if key_matches(headers.get("authorization", ""), self.token):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.token.encode()):
                return True
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if self.loopback and not is_loopback(hostname):
            await self._answer(send, 403, f"host {hostname!r} is not this machine; open the workbench at "
                                          "http://127.0.0.1:PORT")
            return
        origin = headers.get("origin")
        if scope["method"] not in SAFE_METHODS and origin and origin != "null" and urlsplit(origin).netloc != host:
            await self._answer(send, 403, "a request from another site was refused")
            return
        path = scope.get("path", "")
        if path.startswith("/chat-api/") and "/admin" in path:  # the chat's serve app loads nothing
            await self._answer(send, 403, "the chat's model server has no admin API")
            return
        if not path.startswith(OPEN_PREFIXES) and not self.authorised(headers):
            if scope["method"] == "GET" and not path.startswith("/api/"):
                await self._answer(send, 303, "log in first", [(b"location", b"/login")])
            else:
                await self._answer(send, 401, "log in first, or send Authorization: Bearer <token>",
                                   [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(send, status: int, text: str, headers: list | None = None) -> None:
        start, body = _plain(status, text, headers)
        await send(start)
        await send(body)
