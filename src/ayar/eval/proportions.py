"""Intervals and tests for proportions, and chance-corrected agreement between raters.

Pure functions of counts, each with its formula, so they can be checked by hand:

- :func:`wilson_interval`: the Wilson score interval of a binomial proportion (Wilson 1927);
- :func:`two_proportion_test`: the pooled two-proportion z-test, two-sided;
- :func:`cohen_kappa`: two raters on the same items (Cohen 1960);
- :func:`fleiss_kappa`: any fixed number of raters per item (Fleiss 1971).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of ``successes / n``; None when ``n`` is 0.

    With p = k/n::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²)

    Unlike the Wald interval it stays inside [0, 1] and is not empty at p = 0 or 1.
    """
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside 0..{n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ProportionTest:
    """The difference p2 - p1 of two proportions, its z statistic and two-sided p-value."""

    difference: float
    z: float
    p_value: float

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> ProportionTest | None:
    """Pooled z-test of H0: p1 = p2; None when a group is empty or the pooled rate is 0 or 1.

    ``p = (k1 + k2) / (n1 + n2)``, ``se = sqrt(p(1-p)(1/n1 + 1/n2))``,
    ``z = (k2/n2 - k1/n1) / se``, two-sided p-value ``erfc(|z| / sqrt 2)``.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return None
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    difference = k2 / n2 - k1 / n1
    z = difference / se
    return ProportionTest(difference, z, math.erfc(abs(z) / math.sqrt(2)))


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two raters' labels on the same items, in order.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of items labelled alike and
    ``p_e = sum_c P1(c) P2(c)`` the agreement expected from each rater's own label shares.
    None when there are no items, or when chance agreement is already perfect (p_e = 1).

    Raises:
        ValueError: the two sequences differ in length.
    """
    if len(first) != len(second):
        raise ValueError("both raters must label the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    count1, count2 = Counter(first), Counter(second)
    expected = sum(count1[c] * count2[c] for c in count1) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1 - expected)


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa: each item labelled by the same number m >= 2 of raters (who they are may vary).

    With n_ic the raters who put item i in category c, N items::

        P_i   = (sum_c n_ic² - m) / (m(m-1))          agreement on item i
        p_c   = sum_i n_ic / (N m)                      share of category c
        kappa = (mean(P_i) - sum_c p_c²) / (1 - sum_c p_c²)

    None when there are no items or every label is the same category.

    Raises:
        ValueError: items with different numbers of labels, or fewer than two.
    """
    if not items:
        return None
    m = len(items[0])
    if m < 2 or any(len(labels) != m for labels in items):
        raise ValueError("Fleiss' kappa needs the same number (two or more) of labels on every item")
    totals: Counter[str] = Counter()
    agreement = 0.0
    for labels in items:
        counts = Counter(labels)
        totals.update(counts)
        agreement += (sum(c * c for c in counts.values()) - m) / (m * (m - 1))
    n_labels = len(items) * m
    expected = sum((c / n_labels) ** 2 for c in totals.values())
    if expected == 1.0:
        return None
    return (agreement / len(items) - expected) / (1 - expected)
