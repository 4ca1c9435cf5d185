"""Canary exposure: how much more likely the trained model finds a planted canary than other values.

Carlini et al. (2019), "The Secret Sharer", sec. 4. ``prepare`` plants the
canaries (:mod:`ayar.data.canary`, which also defines the templates); the
memorisation audit (:mod:`ayar.eval.memorisation`) scores them here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

from ayar.data.canary import parse_template

# How exposure is estimated, written into memorisation.json.
METHOD = ("sampled rank (Carlini et al. 2019, sec. 4): rank ~ 1 + (|R| - 1) * k / M, where k of M candidates drawn "
          "uniformly from the slot's values have a lower log-perplexity (ties count 1/2); "
          "exposure = log2|R| - log2(rank)")


def exposure(canary_loss: float, candidate_losses: Sequence[float], space_size: int) -> float:
    """Exposure of one canary, in bits, from a sample of candidates (Carlini et al. 2019, sec. 4).

    exposure = log2|R| - log2 rank, where rank is the canary's position (1 = most likely)
    among all |R| sentences the template can make, ordered by log-perplexity. With |R| too large
    to score, the rank is estimated from M candidates drawn uniformly from R: if k of them
    have a lower loss (ties count one half), rank ~ 1 + (|R| - 1) * k / M. So exposure runs from
    0 (every candidate beats the canary) to log2|R| (none does); a canary the model never saw
    sits in the middle: rank ~ |R| / 2, exposure ~ 1 bit. Beating all M candidates only shows
    that fewer than about 1 in M values do better: exposures above log2 M are extrapolations.

    Args:
        canary_loss: the canary sentence's log-perplexity (summed negative log-likelihood).
        candidate_losses: the same for the sampled candidates.
        space_size: |R|.
    """
    if not candidate_losses:
        raise ValueError("no candidates")
    lower = sum(1.0 if c < canary_loss else 0.5 if c == canary_loss else 0.0 for c in candidate_losses)
    rank = 1 + (space_size - 1) * lower / len(candidate_losses)
    return math.log2(space_size) - math.log2(rank)


CHANCE_EXPOSURE = 1.0  # exposure of a canary ranked in the middle of R (the median for one never seen)


def canary_exposures(score: Callable[[list[str]], list[float]], info: dict[str, Any], *, candidates: int = 1000,
                     controls: int = 0, seed: int = 0) -> dict[str, Any]:
    """Exposure of every planted canary, and of ``controls`` fresh values the model never saw.

    Args:
        score: sentences -> log-perplexity of each (summed negative log-likelihood, in nats).
        info: the prepare manifest's ``canaries`` entry (``template`` and ``values`` are used).
        candidates: M, the random candidates every canary is ranked against (the same ones for all).
        controls: unseen values scored like canaries: their exposure shows the chance level.
        seed: seeds the candidates and controls.

    Returns:
        The ``canaries`` block of memorisation.json.
    """
    template = parse_template(info["template"])
    values = list(info["values"])
    rng = random.Random(f"exposure:{seed}")
    pool = template.sample(rng, candidates + controls, exclude=values)
    control_values, candidate_values = pool[:controls], pool[controls:]
    losses = score([template.fill(v) for v in values + control_values + candidate_values])
    planted, unseen, sampled = (losses[: len(values)], losses[len(values) : len(values) + controls],
                                losses[len(values) + controls :])
    exposures = [exposure(loss, sampled, template.space_size) for loss in planted]
    control_exposures = [exposure(loss, sampled, template.space_size) for loss in unseen]
    return {
        "exposures": [round(e, 4) for e in exposures],
        "mean": round(sum(exposures) / len(exposures), 4) if exposures else None,
        "max": round(max(exposures), 4) if exposures else None,
        "chance_level": CHANCE_EXPOSURE,
        "candidate_space_log2": round(math.log2(template.space_size), 4),
        "method": METHOD,
        "candidates_sampled": candidates,
        "resolution_log2": round(math.log2(candidates), 4),
        "control_exposures": [round(e, 4) for e in control_exposures],
        "template": template.text,
        "repeats": info.get("repeats"),
    }
