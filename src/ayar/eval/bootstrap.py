"""Paired bootstrap confidence intervals (Efron & Tibshirani 1993; for MT metrics, Koehn 2004).

Both systems answered the same examples, so the examples are resampled with
replacement *together*: each resample draws n example indices, computes the
metric for base and tuned on exactly those examples, and keeps the difference.
The 95% interval is the 2.5th and 97.5th percentiles of those differences (the
percentile interval). The same seed draws the same indices, so a result is
reproducible and every metric of a comparison sees the same resamples.

The contrast is the difference (tuned - base) by default; ``ratio`` (tuned / base)
gives e.g. the share of a teacher's accuracy a student keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) example indices drawn uniformly with replacement, reproducibly from ``seed``."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one example")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """The central ``level`` percentile interval of the finite ``values``; None when fewer than half are finite.

    A resample can make a ratio metric undefined (no example in it has the
    field); such resamples are left out, as long as they are the minority.
    """
    array = np.asarray(values, dtype=np.float64)
    finite = array[np.isfinite(array)]
    if len(finite) * 2 < len(array) or len(finite) == 0:
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(finite, [tail, 1 - tail])
    return float(low), float(high)


def _ratio(tuned: float, base: float) -> float:
    return tuned / base if base != 0 else math.nan


CONTRASTS: dict[str, Callable[[float, float], float]] = {
    "difference": lambda tuned, base: tuned - base,
    "ratio": _ratio,
}


def paired_bootstrap_ci(
    base: np.ndarray,
    tuned: np.ndarray,
    aggregate: Callable[[np.ndarray], float],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    contrast: str = "difference",
) -> tuple[float, float] | None:
    """Percentile interval of ``aggregate(tuned) - aggregate(base)`` over paired resamples of examples.

    Args:
        base, tuned: (n_examples, k) per-example statistics, row i of both from example i.
        aggregate: turns a subset of rows into the metric's value (the same function
            that gives the reported value from all rows).
        resamples: number of bootstrap resamples.
        seed: seeds the resampling.
        level: coverage of the interval.
        contrast: a key of :data:`CONTRASTS`: ``difference`` (tuned - base) or ``ratio``
            (tuned / base; undefined where the base is 0).

    Returns:
        ``(low, high)``, or None when the contrast is undefined in most resamples.

    Raises:
        ValueError: the two systems have different numbers of examples, or an unknown contrast.
    """
    if len(base) != len(tuned):
        raise ValueError(f"paired bootstrap needs the same examples: {len(base)} vs {len(tuned)} rows")
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast {contrast!r}: choose one of {', '.join(CONTRASTS)}")
    combine = CONTRASTS[contrast]
    values = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for idx in resample_indices(len(base), resamples, seed):
            values.append(combine(_safe(aggregate, tuned[idx]), _safe(aggregate, base[idx])))
    return percentile_interval(values, level)


def bootstrap_rates(
    outcomes: Sequence[str], categories: Sequence[str], *, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of the share of each category among ``outcomes`` (e.g. judge win/tie/loss).

    Returns:
        ``{category: (low, high)}``; every category None when there are no outcomes.
    """
    if not outcomes:
        return {c: None for c in categories}
    codes = np.asarray([list(categories).index(o) for o in outcomes])
    drawn = codes[resample_indices(len(codes), resamples, seed)]  # (resamples, n)
    return {c: percentile_interval((drawn == i).mean(axis=1), level) for i, c in enumerate(categories)}


def _safe(aggregate: Callable[[np.ndarray], float], rows: np.ndarray) -> float:
    try:
        return float(aggregate(rows))
    except (ZeroDivisionError, OverflowError):
        return math.nan
