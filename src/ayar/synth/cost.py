"""Tokens and an estimated price: per request from the response's ``usage``, summed per run.

Prices come from the recipe (``synth.teacher.price``) or the bundled table ``prices.yaml``
(per million tokens, matched by model name: an exact key, else the longest key the name starts
with, so ``gpt-4o-mini-2024-07-18`` is priced as ``gpt-4o-mini``). A model in neither gets
tokens but no price; a request whose response reported no usage is counted in ``without_usage``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib import resources

import yaml

from ayar.eval.endpoint import Completion
from ayar.synth.config import PriceConfig


@functools.lru_cache(maxsize=1)
def price_table() -> dict:
    return yaml.safe_load(resources.files("ayar.synth").joinpath("prices.yaml").read_text(encoding="utf-8"))


def price_of(model: str, override: PriceConfig | None) -> tuple[PriceConfig | None, str]:
    """The price of ``model``'s tokens and where it came from (``recipe``, ``table: KEY`` or ``none``)."""
    if override is not None:
        return override, "recipe"
    table = price_table()
    models = table["models"]
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" -> "gpt-4o"
    key = name if name in models else max((k for k in models if name.startswith(k)), key=len, default=None)
    if key is None:
        return None, "none"
    return PriceConfig(**models[key], currency=table.get("currency", "USD")), f"table: {key}"


def account(completions: Iterable[Completion], model: str, override: PriceConfig | None) -> dict:
    """Summed tokens and the estimated price of ``completions`` (cached ones included: what the data cost).

    Returns:
        ``requests``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ``without_usage``,
        ``price`` (per million, with its source) and ``estimated_cost`` (None without a price).
    """
    prompt = completion = without = n = 0
    for c in completions:
        n += 1
        if c.usage is None:
            without += 1
            continue
        prompt += c.usage["prompt_tokens"]
        completion += c.usage["completion_tokens"]
    price, source = price_of(model, override)
    cost = None
    if price is not None:
        cost = (prompt * price.input_per_million + completion * price.output_per_million) / 1e6
    return {"requests": n, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "without_usage": without,
            "price": {**price.model_dump(), "source": source} if price else {"source": source},
            "estimated_cost": cost, "currency": price.currency if price else None}
