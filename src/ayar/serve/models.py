"""The served models: one base, several LoRA adapters on it, and A/B routes between them.

Every adapter is loaded into one ``peft.PeftModel`` under its own adapter name
(``load_adapter(path, adapter_name=...)``); a request selects one with
``set_adapter``, and the base model's own name runs under ``disable_adapter()``.
The base weights are held once, however many adapters are served.

An A/B route is a virtual model name that sends each request to one of its
arms (adapters or the base) with probability proportional to the arm's weight,
drawn from a seeded RNG so that a run can be replayed; each draw is appended to
a JSONL log (request id → served model).

Selecting an adapter changes shared state, so :meth:`ModelHost.select` and
generation must run under :attr:`ModelHost.lock`, and so must loading and
unloading.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import AyarError
from ayar.serve.protocol import OpenAIError

log = logging.getLogger("ayar.serve")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$")


@dataclass
class ABRoute:
    """A virtual model name splitting traffic between served models by weight."""

    name: str
    arms: list[tuple[str, float]]  # (served model name, weight > 0)
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self) -> str:
        """Draw an arm: ``u = rng.random()`` falls in arm i's slice of [0, 1) cut in proportion to the weights."""
        u = self.rng.random() * sum(w for _, w in self.arms)
        for name, weight in self.arms:
            if u < weight:
                return name
            u -= weight
        return self.arms[-1][0]  # rounding at the top edge


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise OpenAIError(400, f"model name {name!r} must be 1-128 characters of letters, digits and ._:/@- "
                          "starting with a letter or digit", param="name")


def check_adapter_folder(path: str, label: str | None = None) -> None:
    """Refuse folders that are not a safetensors PEFT adapter (never unpickle adapter_model.bin)."""
    folder, label = Path(path), label or path
    if not (folder / "adapter_config.json").is_file():
        raise OpenAIError(400, f"{label}: not a PEFT adapter folder (no adapter_config.json)", param="path")
    if not (folder / "adapter_model.safetensors").is_file():
        raise OpenAIError(400, f"{label}: no adapter_model.safetensors; ayar loads safetensors adapters only",
                          param="path")


class ModelHost:
    """A base model with named adapters and A/B routes; not thread-safe without :attr:`lock`.

    Args:
        model: the base causal LM, in eval mode.
        tokenizer: renders and tokenises prompts for every served model.
        base_name: the name under which the base model itself is served.
        ab_log: JSONL file that records each A/B draw (appended to, never rewritten).
    """

    def __init__(self, model, tokenizer, base_name: str, *, ab_log: Path | None = None):
        check_name(base_name)
        self.tokenizer = tokenizer
        self.base_name = base_name
        self.ab_log = Path(ab_log) if ab_log else None
        self.lock = threading.Lock()
        self.adapters: dict[str, str] = {}  # name -> folder
        self.routes: dict[str, ABRoute] = {}
        self._base = model
        self._peft = None  # a PeftModel once the first adapter is loaded
        config = model.config
        limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
        # Tokenizers without a limit report a huge model_max_length; ignore such sentinels.
        known = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]
        if not known:
            raise AyarError(f"{base_name}: cannot tell the model's context length (no max_position_embeddings)")
        self.context_length = min(known)

    def names(self) -> list[str]:
        return [self.base_name, *self.adapters, *self.routes]

    def require(self, name: str) -> None:
        """Raise a 404 unless ``name`` is served."""
        if name not in self.names():
            raise OpenAIError(404, f"The model `{name}` does not exist; served models: {', '.join(self.names())}",
                              param="model", code="model_not_found")

    def load_adapter(self, name: str, path: str, label: str | None = None) -> None:
        """Load a LoRA adapter under ``name`` (hold :attr:`lock`).

        A failed load leaves nothing behind: the name is not served and peft forgets it.

        Args:
            label: how messages name the folder (an admin client's own path, not the server's).

        Raises:
            OpenAIError: 409 when the name is taken; 400 when the folder is not a
                safetensors adapter or does not fit the base model.
        """
        check_name(name)
        if name in self.names():
            raise OpenAIError(409, f"a model named {name!r} is already served", param="name", code="conflict")
        label = label or path
        check_adapter_folder(path, label)
        from peft import PeftConfig, PeftModel

        try:
            if self._peft is None:  # wrap first, so a failed weight load can be undone with unload()
                config = PeftConfig.from_pretrained(path)
                config.inference_mode = True
                self._peft = PeftModel(self._base, config, adapter_name=name)
            self._peft.load_adapter(path, adapter_name=name)
        except Exception as exc:  # safetensors, peft and torch each raise their own types for a bad file
            log.warning("loading adapter %r from %s failed", name, path, exc_info=True)
            self._forget_failed(name)
            raise OpenAIError(400, f"{label}: cannot load this adapter on {self.base_name}: its files are damaged "
                              f"or it was trained for another model ({type(exc).__name__})", param="path") from None
        self._peft.eval()
        self.adapters[name] = path

    def _forget_failed(self, name: str) -> None:
        """Remove what a failed load left behind (peft registers the name before loading weights)."""
        if self._peft is None:
            return
        if name in self._peft.peft_config:
            if len(self._peft.peft_config) == 1:
                self._base, self._peft = self._peft.unload(), None
                return
            self._peft.delete_adapter(name)
        if self.adapters and self._peft.active_adapter not in self.adapters:
            self._peft.set_adapter(next(iter(self.adapters)))

    def unload_adapter(self, name: str) -> None:
        """Remove an adapter; the last one leaves the plain base model (hold :attr:`lock`).

        Raises:
            OpenAIError: 404 for an unknown adapter, 409 while an A/B route uses it.
        """
        if name not in self.adapters:
            raise OpenAIError(404, f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'}",
                              param="name", code="model_not_found")
        users = [r.name for r in self.routes.values() if name in dict(r.arms)]
        if users:
            raise OpenAIError(409, f"adapter {name!r} is used by the A/B route {users[0]!r}", param="name",
                              code="conflict")
        del self.adapters[name]
        if not self.adapters:
            self._base, self._peft = self._peft.unload(), None
        else:
            self._peft.delete_adapter(name)

    def add_route(self, name: str, arms: list[tuple[str, float]], seed: int = 0) -> None:
        """Serve ``name`` as an A/B split between already served models (not other routes)."""
        check_name(name)
        if name in self.names():
            raise OpenAIError(409, f"a model named {name!r} is already served", param="name", code="conflict")
        if len(arms) < 2 or any(w <= 0 for _, w in arms):
            raise OpenAIError(400, f"A/B route {name!r} needs two or more arms with positive weights")
        for arm, _ in arms:
            if arm not in [self.base_name, *self.adapters]:
                raise OpenAIError(400, f"A/B route {name!r}: {arm!r} is neither the base model nor a loaded adapter")
        self.routes[name] = ABRoute(name, arms, seed)

    @contextmanager
    def select(self, name: str, request_id: str) -> Iterator[tuple[object, str]]:
        """Make ``name`` the active model (hold :attr:`lock` for the whole block).

        Yields:
            (model to generate with, name of the model that serves the request): for an
            A/B route, the arm drawn for this request, recorded in the A/B log.
        """
        self.require(name)
        served = name
        if name in self.routes:
            served = self.routes[name].pick()
            self._log_draw(request_id, name, served)
        if self._peft is None:
            yield self._base, served
            return
        if served == self.base_name:
            with self._peft.disable_adapter():
                yield self._peft, served
            return
        self._peft.set_adapter(served)
        yield self._peft, served

    def _log_draw(self, request_id: str, route: str, served: str) -> None:
        if self.ab_log is None:
            return
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        record = {"time": now, "request_id": request_id, "route": route, "served_by": served}
        self.ab_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.ab_log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
