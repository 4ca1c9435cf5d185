"""Helpers shared by the demo's data generators (:mod:`ayar.demo.products`, :mod:`ayar.demo.support`)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import yaml

from ayar.data.pii.gazetteer import tr_lower, tr_upper

__all__ = ["MAX_TRIES", "balanced_rounds", "load_data", "tr_capitalize", "tr_lower", "tr_upper"]

MAX_TRIES = 1000  # fresh draws allowed per record before giving up on uniqueness
_SENTENCE_START = re.compile(r"(^|[.!?] )(\w)")  # a letter that starts a sentence


@cache
def load_data(name: str) -> dict[str, Any]:
    """Read ``ayar/demo/data/<name>.yaml`` (package data). Callers must not mutate it."""
    text = resources.files("ayar.demo").joinpath(f"data/{name}.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def tr_capitalize(text: str) -> str:
    """Upper-case the first letter of ``text`` and of every sentence in it, Turkish-aware."""
    return _SENTENCE_START.sub(lambda m: m.group(1) + tr_upper(m.group(2)), text)


def balanced_rounds(rng: random.Random, items: list[str]) -> Iterator[str]:
    """Endless sequence of shuffled rounds over ``items``: every window is near-balanced."""
    while True:
        order = list(items)
        rng.shuffle(order)
        yield from order
