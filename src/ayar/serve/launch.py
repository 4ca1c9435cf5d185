"""Building a server from ``ayar serve``'s options, and running it with uvicorn.

``TARGET`` is what ``ayar generate`` accepts: a base model folder (or hub id),
a PEFT adapter folder, or a finished ``ayar train`` run folder. A run's (or an
adapter folder's) adapter is served under the folder's name and its base model
under the base's own name, so one server answers both "tuned" and "baseline".
"""

from __future__ import annotations

import os
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
    no_gate: bool = False  # serve runs that fail their release gate (recorded in the audit ledger)


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


def api_key_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    key = os.environ.get(var, "")
    if not key:
        raise AyarError(f"--api-key-env {var}: the environment variable {var} is unset or empty; "
                        f"export {var}=<secret> first, or leave the option out to serve without a key")
    return key


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

    if options.dtype not in {"auto", *DTYPES}:
        raise AyarError(f"--dtype {options.dtype!r}: choose auto, {', '.join(DTYPES)}")
    if options.max_queue < 1:
        raise AyarError(f"--max-queue {options.max_queue}: must be at least 1")
    api_key = api_key_from_env(options.api_key_env)
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
    return create_app(host, engine, api_key=api_key, audit=audit), host, engine


def run(options: ServeOptions, *, bind: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted; Ctrl-C or SIGTERM finish what was accepted, then exit."""
    import uvicorn

    from ayar.ui import console

    app, host, _ = build(options)
    key = "required" if options.api_key_env else "off"
    console.print(f"serving {', '.join(host.names())} at http://{bind}:{port}/v1 (API key {key}, "
                  f"queue {options.max_queue})", markup=False)
    uvicorn.run(app, host=bind, port=port, log_level="info")
