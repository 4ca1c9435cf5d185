"""`ayar serve` under hostile or unlucky conditions: binding, keys, admin paths, bodies, disconnects, bad values."""

from __future__ import annotations

import asyncio
import shutil
import threading

import httpx
import pytest
from serve_helpers import running_server, wait_until
from typer.testing import CliRunner

from ayar.cli import app as cli
from ayar.errors import AyarError
from ayar.serve.launch import ServeOptions, build
from ayar.serve.policy import check_bind, is_loopback

KEY, ADMIN = "sk-inference-1", "sk-admin-2"
PROMPT = [{"role": "user", "content": "Ürün: mavi renkli güzel bir masa"}]


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("::", False), ("192.168.1.5", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_bind_is_refused_without_a_key(monkeypatch, tiny_llama):
    def built(options):
        raise RuntimeError("the server was built")

    monkeypatch.setattr("ayar.serve.launch.build", built)
    result = CliRunner().invoke(cli, ["serve", str(tiny_llama), "--host", "0.0.0.0"])
    assert isinstance(result.exception, AyarError) and "--insecure" in str(result.exception)
    with pytest.raises(AyarError, match="without an API key"):
        check_bind("192.168.1.5", has_api_key=False, insecure=False)
    check_bind("0.0.0.0", has_api_key=True, insecure=False)
    check_bind("0.0.0.0", has_api_key=False, insecure=True)
    check_bind("127.0.0.1", has_api_key=False, insecure=False)
    for args in (["--insecure"], ["--api-key-env", "AYAR_TEST_BIND_KEY"]):  # both reach the build step
        monkeypatch.setenv("AYAR_TEST_BIND_KEY", KEY)
        result = CliRunner().invoke(cli, ["serve", str(tiny_llama), "--host", "0.0.0.0", *args])
        assert "the server was built" in str(result.exception)


def test_admin_key_must_differ_from_the_api_key(tiny_llama, monkeypatch):
    monkeypatch.setenv("AYAR_TEST_K1", KEY)
    monkeypatch.setenv("AYAR_TEST_K2", KEY)
    with pytest.raises(AyarError, match="must differ"):
        build(ServeOptions(str(tiny_llama), api_key_env="AYAR_TEST_K1", admin_key_env="AYAR_TEST_K2"))


@pytest.fixture(scope="module")
def roots(lora_pair, tmp_path_factory):
    """An adapter root holding a copy of adapter ``a`` and a link to ``b`` (which lies outside it)."""
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(lora_pair["a"], root / "a")
    (root / "link").symlink_to(lora_pair["b"], target_is_directory=True)
    corrupt = root / "corrupt"
    shutil.copytree(lora_pair["a"], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    return root


@pytest.fixture(scope="module")
def guarded(tiny_llama, roots):
    options = ServeOptions(str(tiny_llama), dtype="fp32", max_queue=2, api_key_env="AYAR_TEST_HARD_KEY",
                           admin_key_env="AYAR_TEST_HARD_ADMIN", adapter_roots=[str(roots)], max_body_bytes=64_000)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AYAR_TEST_HARD_ADMIN", ADMIN)
        with running_server(options, api_key=KEY, env=env) as server:
            yield server


def admin_client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)


def api_client(server, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout)


def test_admin_loads_only_from_under_the_adapter_root(guarded, lora_pair, roots):
    admin = admin_client(guarded)
    for path in (str(lora_pair["b"]), "../" + lora_pair["b"].parent.name + "/b", "link", str(roots / "link"),
                 str(roots / "a" / ".." / ".." / lora_pair["b"].parent.name / "b")):
        refused = admin.post("/admin/adapters", json={"name": "x", "path": path})
        assert refused.status_code == 403 and refused.json()["error"]["param"] == "path", path
        assert path == str(lora_pair["b"]) or str(lora_pair["b"]) not in refused.text  # no resolved paths
    assert admin.post("/admin/adapters", json={"name": "a1", "path": "a"}).status_code == 201
    assert admin.post("/admin/adapters", json={"name": "a2", "path": str(roots / "a")}).status_code == 201
    listing = admin.get("/admin/adapters").json()
    assert listing["adapters"] == [{"name": "a1"}, {"name": "a2"}]  # names only, no server paths
    assert str(roots) not in admin.get("/admin/adapters").text
    for name in ("a1", "a2"):
        assert admin.delete(f"/admin/adapters/{name}").status_code == 200


def test_a_corrupt_adapter_is_400_and_leaves_nothing_behind(guarded):
    admin, api = admin_client(guarded), api_client(guarded)
    before = api.post("/v1/chat/completions", json={"model": "llama", "messages": PROMPT, "max_tokens": 6,
                                                     "temperature": 0}).json()["choices"][0]["message"]["content"]
    failed = admin.post("/admin/adapters", json={"name": "broken", "path": "corrupt"})
    assert failed.status_code == 400 and failed.json()["error"]["param"] == "path"
    assert "broken" not in [m["id"] for m in api.get("/v1/models").json()["data"]]
    assert guarded.host._peft is None  # the half-loaded adapter was removed from the base model
    after = api.post("/v1/chat/completions", json={"model": "llama", "messages": PROMPT, "max_tokens": 6,
                                                    "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert after == before
    assert admin.post("/admin/adapters", json={"name": "broken", "path": "a"}).status_code == 201  # the name is free
    assert admin.delete("/admin/adapters/broken").status_code == 200


def test_admin_is_off_with_an_api_key_but_no_admin_key_and_with_no_admin(tiny_llama, monkeypatch):
    monkeypatch.setenv("AYAR_TEST_ONLY_KEY", KEY)
    for options in (ServeOptions(str(tiny_llama), api_key_env="AYAR_TEST_ONLY_KEY"),
                    ServeOptions(str(tiny_llama), no_admin=True)):
        app, _, _ = build(options)
        status, _, _ = asyncio.run(call(app, "GET", "/admin/adapters", headers={"authorization": f"Bearer {KEY}"}))
        assert status == 403


def test_docs_and_openapi_are_off(guarded):
    api = api_client(guarded)
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert httpx.get(f"{guarded.url}{path}").status_code == 401
        assert api.get(path).status_code == 404


async def call(app, method: str, path: str, *, headers: dict | None = None, chunks: list[bytes] = ()):
    """Drive the ASGI app directly; returns (status, body, how many receive() calls it made)."""
    pulled = 0
    pending = list(chunks)

    async def receive():
        nonlocal pulled
        pulled += 1
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], body, pulled


def test_unauthenticated_or_oversized_bodies_are_refused_unread(guarded):
    app = guarded.server.config.app
    big = [b"x" * 65_536] * 640  # a 40 MiB body, in chunks
    # No key: 401 before a single chunk is read, whatever the body (malformed JSON included).
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {ADMIN}"}):
        status, body, pulled = asyncio.run(call(app, "POST", "/v1/chat/completions", headers=headers,
                                                chunks=list(big)))
        assert (status, pulled) == (401, 0) and b"invalid_api_key" in body
    status, _, pulled = asyncio.run(call(app, "POST", "/v1/chat/completions", headers={}, chunks=[b"{not json"]))
    assert (status, pulled) == (401, 0)
    # With the key: a declared length over the cap is refused unread, an undeclared one once the cap is passed.
    auth = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    status, body, pulled = asyncio.run(call(app, "POST", "/v1/chat/completions",
                                            headers={**auth, "content-length": str(40 * 2**20)}, chunks=list(big)))
    assert (status, pulled) == (413, 0) and b"request_too_large" in body
    status, _, pulled = asyncio.run(call(app, "POST", "/v1/chat/completions", headers=auth, chunks=list(big)))
    assert status == 413 and pulled == 1 + 64_000 // 65_536  # stopped at the first chunk past 64 000 bytes


def test_strict_values_are_400_naming_the_parameter(guarded):
    api = api_client(guarded)
    for extra, param in (({"logit_bias": {"²": 1}}, "logit_bias"), ({"logit_bias": {"٣": 1}}, "logit_bias"),
                         ({"seed": 2**64}, "seed"), ({"max_tokens": 10**30}, "max_tokens"),
                         ({"messages": [{"role": "user", "content": "x" * 70_000}]}, None)):
        body = {"model": "llama", "messages": PROMPT, "max_tokens": 2, **extra}
        response = api.post("/v1/chat/completions", json=body)
        if param is None:  # over the 64 000-byte cap of this server
            assert response.status_code == 413
            continue
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param


def test_internal_errors_are_generic(guarded):
    api = api_client(guarded)

    def fail(job):
        raise RuntimeError("secret internal detail at /srv/models/x")

    guarded.engine.before_job = fail
    try:
        response = api.post("/v1/chat/completions", json={"model": "llama", "messages": PROMPT, "max_tokens": 2})
    finally:
        guarded.engine.before_job = None
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
    assert "secret" not in response.text and "RuntimeError" not in response.text


def ask_and_leave(server, stream: bool = False) -> threading.Thread:
    """A client that sends a long request and gives up after half a second (its connection closes)."""

    def run():
        with pytest.raises(httpx.TimeoutException):
            body = {"model": "llama", "messages": PROMPT, "max_tokens": 200, "temperature": 0, "stream": stream}
            with api_client(server, timeout=0.5) as client:
                client.post("/v1/chat/completions", json=body)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_client_that_leaves_cancels_its_generation(guarded):
    seen = {}

    def hold(job):  # generation starts only once the client has left, or after 15 s
        seen["cancelled"] = job.cancelled.wait(timeout=15)

    guarded.engine.before_job = hold
    try:
        ask_and_leave(guarded).join(timeout=30)
        wait_until(lambda: "cancelled" in seen, timeout=30)
    finally:
        guarded.engine.before_job = None
    assert seen["cancelled"] is True


def test_queued_requests_of_clients_that_left_are_dropped(guarded):
    entered, release = threading.Event(), threading.Event()
    served = []

    def hold(job):
        served.append(job.request_id)
        entered.set()
        release.wait(timeout=30)

    guarded.engine.before_job = hold
    try:
        first = threading.Thread(target=lambda: api_client(guarded).post(
            "/v1/chat/completions", json={"model": "llama", "messages": PROMPT, "max_tokens": 1}))
        first.start()
        assert entered.wait(timeout=20)
        leaver = ask_and_leave(guarded)
        wait_until(lambda: guarded.engine.pending() == 1)
        leaver.join(timeout=30)
        wait_until(lambda: guarded.engine.pending() == 0, timeout=10)  # its place in the queue is free again
        release.set()
        first.join(timeout=30)
    finally:
        release.set()
        guarded.engine.before_job = None
    assert len(served) == 1  # the worker never started the abandoned request


def test_a_huge_prompt_is_refused_from_its_prefix(guarded):
    from ayar.serve import app as serve_app
    from ayar.serve.protocol import OpenAIError

    tokenizer, context = guarded.host.tokenizer, guarded.host.context_length
    seen = []

    class Spy:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, text, **kwargs):
            seen.append(len(text))
            return tokenizer(text, **kwargs)

    huge = [{"role": "user", "content": "masa " * 1_000_000}]  # 5 MB, ~1M tokens
    with pytest.raises(OpenAIError) as caught:
        serve_app.chat_prompt_ids(Spy(), huge, context)
    assert caught.value.code == "context_length_exceeded"
    assert max(seen) <= serve_app.PROBE_CHARS_PER_TOKEN * context  # never the whole prompt


def test_tokenisation_runs_off_the_event_loop(guarded, monkeypatch):
    from ayar.serve import app as serve_app

    entered, release = threading.Event(), threading.Event()
    real = serve_app.chat_prompt_ids

    def slow(*args):
        entered.set()
        release.wait(timeout=30)
        return real(*args)

    monkeypatch.setattr(serve_app, "chat_prompt_ids", slow)
    asking = threading.Thread(target=lambda: api_client(guarded).post(
        "/v1/chat/completions", json={"model": "llama", "messages": PROMPT, "max_tokens": 1}))
    asking.start()
    try:
        assert entered.wait(timeout=20)
        assert httpx.get(f"{guarded.url}/health", timeout=5).status_code == 200  # the loop is free meanwhile
    finally:
        release.set()
        asking.join(timeout=30)
