"""Paired bootstrap: reproducible, centred on the true difference, as wide as the textbook standard error."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ayar.eval.bootstrap import bootstrap_rates, paired_bootstrap_ci, percentile_interval, resample_indices


def mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


def synthetic(n: int = 400, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-example 0/1 scores: base right with p = 0.5, tuned with p = 0.7 (true difference 0.2)."""
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    base = (u < 0.5).astype(float)[:, None]
    tuned = (rng.random(n) < 0.7).astype(float)[:, None]
    return base, tuned


def test_same_seed_same_interval_other_seed_other_interval():
    base, tuned = synthetic()
    a = paired_bootstrap_ci(base, tuned, mean, resamples=500, seed=7)
    assert a == paired_bootstrap_ci(base, tuned, mean, resamples=500, seed=7)
    assert a != paired_bootstrap_ci(base, tuned, mean, resamples=500, seed=8)
    assert (resample_indices(5, 3, 0) == resample_indices(5, 3, 0)).all()


def test_interval_has_textbook_width():
    base, tuned = synthetic()
    low, high = paired_bootstrap_ci(base, tuned, mean, resamples=2000, seed=0)
    # For a mean, the percentile interval approaches mean(d) -/+ 1.96 * sd(d) / sqrt(n), d = tuned - base.
    d = (tuned - base)[:, 0]
    half = 1.96 * d.std(ddof=1) / math.sqrt(len(d))
    assert low == pytest.approx(d.mean() - half, abs=0.01)
    assert high == pytest.approx(d.mean() + half, abs=0.01)


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    covered = 0
    for data_seed in range(100):
        base, tuned = synthetic(n=200, seed=data_seed)
        low, high = paired_bootstrap_ci(base, tuned, mean, resamples=400, seed=data_seed)
        covered += low <= 0.2 <= high
    # Binomial(100, 0.95): 88..100 holds with probability > 0.999 when the coverage is right.
    assert 88 <= covered <= 100, covered


def test_pairing_makes_the_interval_narrower_than_independent_samples():
    # Tuned = base + 0.1 on every example: each resample's difference is exactly 0.1.
    base = np.linspace(0, 1, 50)[:, None]
    assert paired_bootstrap_ci(base, base + 0.1, mean, resamples=200, seed=0) == pytest.approx((0.1, 0.1))


def test_single_example_gives_a_point_interval():
    assert paired_bootstrap_ci(np.array([[0.0]]), np.array([[1.0]]), mean, resamples=100) == (1.0, 1.0)


def test_undefined_resamples_are_left_out_unless_most_are_undefined():
    def ratio(rows: np.ndarray) -> float:
        total = rows[:, 1].sum()
        return rows[:, 0].sum() / total if total else math.nan

    # One counted example out of 20: (19/20)^20 = 36% of resamples miss it and are undefined;
    # the others all give 1 - 0.
    base = np.zeros((20, 2))
    tuned = np.zeros((20, 2))
    base[0], tuned[0] = (0, 1), (1, 1)
    assert paired_bootstrap_ci(base, tuned, ratio, resamples=200, seed=0) == (1.0, 1.0)
    # Nothing counted at all: undefined everywhere, so no interval.
    assert paired_bootstrap_ci(base[1:], tuned[1:], ratio, resamples=200, seed=0) is None
    assert percentile_interval([1.0, 2.0, math.nan]) == pytest.approx((1.025, 1.975))
    with pytest.raises(ValueError, match="same examples"):
        paired_bootstrap_ci(base, tuned[:3], ratio)


def test_rates_of_categories():
    intervals = bootstrap_rates(["tie"] * 10, ("win", "tie", "loss"), resamples=100, seed=0)
    assert intervals == {"win": (0.0, 0.0), "tie": (1.0, 1.0), "loss": (0.0, 0.0)}
    mixed = bootstrap_rates(["win"] * 60 + ["loss"] * 40, ("win", "tie", "loss"), resamples=2000, seed=0)
    # Binomial: 0.6 -/+ 1.96 * sqrt(0.6 * 0.4 / 100) = 0.6 -/+ 0.096.
    assert mixed["win"] == pytest.approx((0.504, 0.696), abs=0.015)
    assert bootstrap_rates([], ("win",)) == {"win": None}


def test_ratio_contrast_by_hand():
    # Every example scores 0.8 for the base and 0.6 for the tuned system: every resample's ratio is 0.75.
    base, tuned = np.full((50, 1), 0.8), np.full((50, 1), 0.6)
    assert paired_bootstrap_ci(base, tuned, mean, resamples=200, contrast="ratio") == pytest.approx((0.75, 0.75))
    assert paired_bootstrap_ci(base, tuned, mean, resamples=200) == pytest.approx((-0.2, -0.2))
    # A base that never scores leaves the ratio undefined in every resample.
    assert paired_bootstrap_ci(np.zeros((50, 1)), tuned, mean, resamples=200, contrast="ratio") is None
    with pytest.raises(ValueError, match="contrast"):
        paired_bootstrap_ci(base, tuned, mean, contrast="quotient")


def test_ratio_contrast_resamples_the_same_pairs_as_a_direct_loop():
    base, tuned = synthetic()
    ratios = [mean(tuned[idx]) / mean(base[idx]) for idx in resample_indices(len(base), 500, 3)]
    expected = percentile_interval(ratios)
    low, high = paired_bootstrap_ci(base, tuned, mean, resamples=500, seed=3, contrast="ratio")
    assert (low, high) == pytest.approx(expected)
    assert low < mean(tuned) / mean(base) < high
