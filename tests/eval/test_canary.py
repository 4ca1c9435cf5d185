"""Canary exposure: the formula by hand, and the exposures of every planted canary with a fake scorer."""

from __future__ import annotations

import math

import pytest

from ayar.eval.canary import canary_exposures, exposure

# ----------------------------------------------------------------------------- exposure


def test_exposure_against_hand_computation():
    # |R| = 1024; canary loss 2.0 among candidates [1, 3, 2, 5]: one lower, one tie -> k = 1.5 of M = 4.
    # rank = 1 + 1023 * 1.5 / 4 = 384.625; exposure = 10 - log2(384.625) = 10 - 8.58731 = 1.41269
    assert exposure(2.0, [1.0, 3.0, 2.0, 5.0], 1024) == pytest.approx(10 - math.log2(384.625))
    assert exposure(2.0, [1.0, 3.0, 2.0, 5.0], 1024) == pytest.approx(1.41269, abs=1e-5)
    assert exposure(0.1, [1.0, 3.0], 1024) == pytest.approx(10.0)  # beats every candidate: log2 |R|
    assert exposure(9.0, [1.0, 3.0], 1024) == pytest.approx(0.0)  # beaten by every candidate
    assert exposure(2.0, [1.0, 3.0], 2**20) == pytest.approx(1.0, abs=1e-5)  # middle rank: chance, 1 bit


def test_canary_exposures_with_a_fake_scorer():
    """Score = the slot's number (so lower numbers look 'more likely'); planted ones get chosen scores."""
    seen: list[list[str]] = []

    def score(sentences: list[str]) -> list[float]:
        seen.append(sentences)
        special = {"PIN 777 bitti": -1.0, "PIN 001 bitti": 1e9}
        return [special.get(s, float(s.split()[1])) for s in sentences]

    info = {"template": "PIN {digits:3} bitti", "values": ["777", "001", "500"], "repeats": 4}
    result = canary_exposures(score, info, candidates=50, controls=2, seed=5)
    (sentences,) = seen  # one scoring call: planted, then controls, then candidates
    assert sentences[:3] == ["PIN 777 bitti", "PIN 001 bitti", "PIN 500 bitti"]
    candidates = [int(s.split()[1]) for s in sentences[5:]]
    assert len(candidates) == 50 and not {777, 1, 500} & set(candidates + [int(s.split()[1]) for s in sentences[3:5]])
    k = sum(c < 500 for c in candidates) + 0.5 * sum(c == 500 for c in candidates)
    expected = [math.log2(1000), 0.0, math.log2(1000) - math.log2(1 + 999 * k / 50)]
    assert result["exposures"] == pytest.approx(expected, abs=1e-4)
    assert result["max"] == pytest.approx(math.log2(1000), abs=1e-4)
    assert result["mean"] == pytest.approx(sum(expected) / 3, abs=1e-4)
    assert result["candidate_space_log2"] == pytest.approx(9.9658, abs=1e-4)
    assert result["chance_level"] == 1.0 and len(result["control_exposures"]) == 2
    assert canary_exposures(score, info, candidates=50, controls=2, seed=5) == result  # seeded
