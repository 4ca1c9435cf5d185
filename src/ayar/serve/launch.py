"""Building a server from ``ayar serve``'s options, and running it with uvicorn.

``TARGET`` is what ``ayar generate`` accepts: a base model folder (or hub id),
a PEFT adapter folder, or a finished ``ayar train`` run folder. A run's (or an
adapter folder's) adapter is served under the folder's name and its base model
under the base's own name, so one server answers both "tuned" and "baseline".
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import AyarError
from ayar.serve.protocol import OpenAIError


@dataclass
class ServeOptions:
    """Everything ``ayar serve`` can be told (see the CLI's help for each)."""

    target: str
    adapters: list[str] = field(default_factory=list)  # "name=path"
    ab: list[str] = field(default_factory=list)  # "route=a:0.5,b:0.5"
    ab_seed: int = 0
    ab_log: Path = Path("ab_log.jsonl")
    dtype: str = "auto"
    max_queue: int = 16
    api_key_env: str | None = None
    admin_key_env: str | None = None  # the admin API's own key; without it the admin API is open only keyless
    no_admin: bool = False
    adapter_roots: list[str] = field(default_factory=list)  # folders POST /admin/adapters may load from
    insecure: bool = False  # allow a non-loopback bind without an API key
    docs: bool = False  # serve /docs and /openapi.json (behind the API key)
    max_body_bytes: int = 2 * 1024 * 1024
    no_gate: bool = False  # serve runs that fail their release gate (recorded in the audit ledger)
    request_log: Path | None = None  # JSONL of requests and feedback, redacted (None: no log, feedback off)
    request_log_days: float = 30.0  # retention of the request log


def parse_adapter(spec: str) -> tuple[str, str]:
    """``name=path`` → (name, path).

    Raises:
        AyarError: no ``=``, or an empty name or path.
    """
    name, sep, path = spec.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise AyarError(f"--adapter {spec!r}: write it as NAME=PATH, e.g. --adapter support=runs/support")
    return name.strip(), path.strip()


def parse_ab(spec: str) -> tuple[str, list[tuple[str, float]]]:
    """``route=a:0.5,b:0.5`` → (route, [(a, 0.5), (b, 0.5)]); weights need not sum to 1.

    Raises:
        AyarError: the text does not have that shape, or a weight is not a positive number.
    """
    route, sep, rest = spec.partition("=")
    hint = "write it as ROUTE=MODEL:WEIGHT,MODEL:WEIGHT, e.g. --ab support-ab=v1:0.9,v2:0.1"
    if not sep or not route.strip():
        raise AyarError(f"--ab {spec!r}: {hint}")
    arms = []
    for part in rest.split(","):
        model, colon, weight = part.strip().rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not colon or not model or not value > 0:
            raise AyarError(f"--ab {spec!r}: {part.strip()!r} is not MODEL:WEIGHT with a positive weight; {hint}")
        arms.append((model, value))
    if len(arms) < 2:
        raise AyarError(f"--ab {spec!r}: an A/B route needs at least two models; {hint}")
    return route.strip(), arms


def served_name(path: str) -> str:
    """The model name for a folder (its last component) or a hub id (as it is)."""
    local = Path(path).expanduser()
    return local.resolve().name if local.exists() else path


def api_key_from_env(var: str | None, option: str = "--api-key-env") -> str | None:
    if var is None:
        return None
    key = os.environ.get(var, "")
    if not key:
        raise AyarError(f"{option} {var}: the environment variable {var} is unset or empty; "
                        f"export {var}=<secret> first, or leave the option out")
    return key


def keys(options: ServeOptions) -> tuple[str | None, str | None]:
    """(API key, admin key) from their environment variables.

    Raises:
        AyarError: a variable is unset, or both keys are the same secret.
    """
    api_key = api_key_from_env(options.api_key_env)
    admin_key = None if options.no_admin else api_key_from_env(options.admin_key_env, "--admin-key-env")
    if admin_key is not None and admin_key == api_key:
        raise AyarError(f"--admin-key-env {options.admin_key_env}: the admin key must differ from the API key, "
                        "or every client could load and unload adapters")
    return api_key, admin_key


def build(options: ServeOptions):
    """Load the model and adapters and return the app, its :class:`ModelHost` and :class:`Engine`.

    Raises:
        AyarError: a bad option, a model or adapter that cannot be loaded, a name used twice, a run that
            fails its release gate (without ``no_gate``).
    """
    from ayar.govern.record import ServeAudit
    from ayar.model.load import DTYPES
    from ayar.model.run_folder import load_for_inference, model_spec
    from ayar.serve.app import create_app
    from ayar.serve.engine import Engine
    from ayar.serve.models import ModelHost
    from ayar.serve.request_log import RequestLog

    if options.dtype not in {"auto", *DTYPES}:
        raise AyarError(f"--dtype {options.dtype!r}: choose auto, {', '.join(DTYPES)}")
    if options.max_queue < 1:
        raise AyarError(f"--max-queue {options.max_queue}: must be at least 1")
    request_log = RequestLog(options.request_log, options.request_log_days) if options.request_log else None
    from ayar.serve.policy import check_roots

    api_key, admin_key = keys(options)
    roots = check_roots(options.adapter_roots)
    adapters = [parse_adapter(s) for s in options.adapters]
    routes = [parse_ab(s) for s in options.ab]

    spec = model_spec(options.target)
    base_name = served_name(spec.base)
    if spec.adapter is not None:
        adapters.insert(0, (served_name(options.target), str(spec.adapter)))
    else:
        base_name = served_name(options.target)
    if spec.init_adapter is not None:  # the run's adapter was trained on the base with an earlier adapter merged in
        init = spec.init_adapter
        base_name = f"{base_name}@{served_name(str(init.parent if init.name == 'adapter' else init))}"
    base = spec.base
    audit = ServeAudit(options.no_gate, options.target)
    gates = {path: audit.admit(path) for path in (base, *(p for _, p in adapters))}  # before loading anything
    # The base (with any merged init adapter); the adapters are hosted by name on top of it. A run's
    # adapter folder carries the tokenizer (and chat template) it was trained with.
    model, tokenizer = load_for_inference(spec, dtype=options.dtype, with_adapter=False)

    host = ModelHost(model, tokenizer, base_name, ab_log=options.ab_log if routes else None)
    try:
        for name, path in adapters:
            host.load_adapter(name, path)
        for name, arms in routes:
            host.add_route(name, arms, seed=options.ab_seed)
    except OpenAIError as exc:
        raise AyarError(exc.message) from None
    audit.loaded(base_name, base, gates[base])
    for name, path in adapters:
        audit.loaded(name, path, gates[path], base=base_name)
    engine = Engine(host, options.max_queue)
    app = create_app(host, engine, api_key=api_key, admin_key=admin_key, admin=not options.no_admin,
                     adapter_roots=roots, max_body_bytes=options.max_body_bytes, docs=options.docs, audit=audit,
                     request_log=request_log)
    return app, host, engine


def run(options: ServeOptions, *, bind: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted; Ctrl-C or SIGTERM finish what was accepted, then exit.

    Raises:
        AyarError: a non-loopback ``bind`` without an API key (unless ``options.insecure``), or a bad option.
    """
    import uvicorn

    from ayar.serve.policy import check_bind
    from ayar.ui import console

    check_bind(bind, has_api_key=options.api_key_env is not None, insecure=options.insecure)
    app, host, _ = build(options)
    key = "required" if options.api_key_env else "off"
    admin = "off" if options.no_admin or (options.api_key_env and not options.admin_key_env) else \
        ("own key" if options.admin_key_env else "open")
    logged = f", request log {options.request_log} ({options.request_log_days:g} days)" if options.request_log else ""
    console.print(f"serving {', '.join(host.names())} at http://{bind}:{port}/v1 (API key {key}, admin API "
                  f"{admin}, queue {options.max_queue}{logged}); metrics at /metrics", markup=False)
    uvicorn.run(app, host=bind, port=port, log_level="info")


@dataclass
class Background:
    """A server running in a thread of this process (:func:`serve_in_background`)."""

    url: str  # http://HOST:PORT, without /v1
    host: object  # ayar.serve.models.ModelHost
    engine: object  # ayar.serve.engine.Engine
    server: object  # uvicorn.Server
    thread: threading.Thread


@contextmanager
def serve_in_background(options: ServeOptions, *, bind: str = "127.0.0.1",
                        ready_timeout: float = 60.0) -> Iterator[Background]:
    """Serve ``options`` on a free port of ``bind`` from a thread of this process until the block ends.

    The port is bound here and handed to uvicorn (no other process can take it in between);
    the block starts once uvicorn has started the app (the engine's worker is running). On
    leaving the block, even on an error, the server stops: accepted requests finish, the
    worker is drained and the audit ledger records the unloads.

    Raises:
        AyarError: a bad option or model (as :func:`build`), a non-loopback ``bind`` without an
            API key, or a server that did not start within ``ready_timeout`` seconds.
    """
    import uvicorn

    from ayar.serve.policy import check_bind

    check_bind(bind, has_api_key=options.api_key_env is not None, insecure=options.insecure)
    app, host, engine = build(options)
    sock = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
    sock.bind((bind, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ayar-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AyarError(f"the server on {bind}:{port} did not start within {ready_timeout:g} s")
            time.sleep(0.01)
        yield Background(f"http://{bind if ':' not in bind else f'[{bind}]'}:{port}", host, engine, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=ready_timeout)
        sock.close()
