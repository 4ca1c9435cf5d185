"""Scores for structured (JSON) output: parse rate and per-field accuracy."""

from __future__ import annotations

import json
from collections.abc import Sequence


def parse_json_object(text: str) -> dict | None:
    """The reply as a JSON object, or None when it is not exactly one JSON object."""
    try:
        value = json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def parse_json_lenient(text: str) -> dict | None:
    """The first JSON object found anywhere in ``text`` (prose or more output around it allowed), or None.

    The strict parse (:func:`parse_json_object`) is what a program reading the reply gets; this one shows how
    much of a model's failure is only its framing (a base model that keeps writing after the object).
    """
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, ValueError):
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def structured_scores(replies: Sequence[str], references: Sequence[str], fields: Sequence[str]) -> dict[str, float]:
    """JSON validity and exact per-field accuracy of ``replies`` against reference JSON strings.

    Args:
        replies: generated texts.
        references: the expected JSON texts, one per reply.
        fields: keys compared for equality (a reply that does not parse scores 0 on each).

    Returns:
        ``{"json_valid": rate, "<field>_accuracy": rate, ...}`` with rates in [0, 1].
    """
    if len(replies) != len(references):
        raise ValueError(f"{len(replies)} replies for {len(references)} references")
    n = max(len(replies), 1)
    parsed = [parse_json_object(r) for r in replies]
    expected = [json.loads(r) for r in references]
    scores = {"json_valid": sum(p is not None for p in parsed) / n}
    for field in fields:
        hits = sum(p is not None and field in p and p[field] == e.get(field) for p, e in zip(parsed, expected, strict=True))
        scores[f"{field}_accuracy"] = hits / n
    return scores
