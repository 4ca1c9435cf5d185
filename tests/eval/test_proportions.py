"""Wilson intervals, the two-proportion test and kappa against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from ayar.eval.proportions import cohen_kappa, fleiss_kappa, two_proportion_test, wilson_interval


def test_wilson_interval_by_hand():
    # 8/10, z = 1.96: centre (0.8 + z²/20) / (1 + z²/10) = 0.71674, half 0.22658.
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-5) and high == pytest.approx(0.94332, abs=1e-5)
    low, high = wilson_interval(0, 10)  # not empty at p = 0, unlike Wald's
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_two_proportion_test_by_hand():
    # 40/100 vs 60/100: pooled 0.5, se sqrt(0.25 * 0.02) = 0.070711, z = 0.2 / se = 2.828427, p = erfc(2).
    test = two_proportion_test(40, 100, 60, 100)
    assert test.difference == pytest.approx(0.2)
    assert test.z == pytest.approx(2.828427, abs=1e-6)
    assert test.p_value == pytest.approx(math.erfc(2.0)) and test.p_value == pytest.approx(0.0046777, abs=1e-7)
    assert test.significant() and not two_proportion_test(50, 100, 55, 100).significant()
    assert two_proportion_test(5, 5, 3, 3) is None  # every thumb up: nothing to test
    assert two_proportion_test(0, 0, 3, 4) is None


def test_cohen_kappa_by_hand():
    # 50 items: both yes 20, first yes second no 5, first no second yes 10, both no 15.
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4.
    first = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    second = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b", "c"], ["a", "b", "c"]) == pytest.approx(1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # chance agreement is already 1
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_fleiss_kappa_by_hand():
    # Three items, three raters: P_i = 1, 1/3, 1 (mean 7/9); p_a = 5/9, p_b = 4/9, P_e = 41/81;
    # kappa = (7/9 - 41/81) / (1 - 41/81) = (22/81) / (40/81) = 0.55.
    assert fleiss_kappa([["a", "a", "a"], ["a", "a", "b"], ["b", "b", "b"]]) == pytest.approx(0.55)
    # Two raters: Fleiss' kappa is Scott's pi, here 1 - 0.5 / 0.5 with p_e = 0.5 and p_o = 0.5 -> 0.
    assert fleiss_kappa([["a", "b"], ["a", "a"], ["b", "b"], ["b", "a"]]) == pytest.approx(0.0)
    assert fleiss_kappa([]) is None
    with pytest.raises(ValueError):
        fleiss_kappa([["a", "b"], ["a"]])
