"""Preference-optimisation losses as pure functions of per-sequence log-probabilities.

Every paired loss has the same signature::

    loss(policy: SeqLogps, reference: SeqLogps | None, params) -> PairLoss

where :class:`SeqLogps` holds, for each pair, the *summed* log-probability of
the chosen and rejected completions and their token counts (so per-token
averages are available to the losses that use them). A loss returns the
per-pair loss and the rewards it implies; the training objective averages over
pairs (and adds the chosen-reply NLL term for ORPO and CPO, whose weight the
registry entry gives). No model, no trainer: each is testable on small tensors.

Notation: ``h = (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))``
is the difference of log-ratios (the DPO "logit"), ``beta`` the inverse
temperature, ``eps`` the label-smoothing rate (the assumed share of flipped
labels).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SeqLogps:
    """Per-pair sums of completion-token log-probabilities and the token counts."""

    chosen: torch.Tensor  # (pairs,)
    rejected: torch.Tensor  # (pairs,)
    chosen_tokens: torch.Tensor  # (pairs,)
    rejected_tokens: torch.Tensor  # (pairs,)

    def averages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token mean log-probabilities of chosen and rejected."""
        return self.chosen / self.chosen_tokens.clamp(min=1), self.rejected / self.rejected_tokens.clamp(min=1)


@dataclass(frozen=True)
class PairLoss:
    losses: torch.Tensor  # (pairs,) the loss of each pair, before averaging
    chosen_rewards: torch.Tensor  # (pairs,) detached
    rejected_rewards: torch.Tensor  # (pairs,) detached


def _smoothed_sigmoid(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``-(1 - eps) log sigma(z) - eps log sigma(-z)``: the Bradley-Terry loss with flipped-label rate eps."""
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


def _log_ratios(policy: SeqLogps, reference: SeqLogps) -> tuple[torch.Tensor, torch.Tensor]:
    return policy.chosen - reference.chosen, policy.rejected - reference.rejected


def dpo_sigmoid(policy: SeqLogps, reference: SeqLogps, beta: float = 0.1, label_smoothing: float = 0.0,
                **_) -> PairLoss:
    """DPO (Rafailov et al. 2023, eq. 7), with conservative label smoothing (cDPO, Mitchell 2023).

    ``loss = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)``; rewards are
    ``beta * (log pi(y|x) - log ref(y|x))`` for each completion. eps = 0 is plain DPO.
    """
    chosen_ratio, rejected_ratio = _log_ratios(policy, reference)
    losses = _smoothed_sigmoid(beta * (chosen_ratio - rejected_ratio), label_smoothing)
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def dpo_robust(policy: SeqLogps, reference: SeqLogps, beta: float = 0.1, label_smoothing: float = 0.0,
               **_) -> PairLoss:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO", eq. 9): unbiased under label noise eps.

    ``loss = ((1 - eps)(-log sigma(beta h)) - eps(-log sigma(-beta h))) / (1 - 2 eps)``, eps < 0.5.
    """
    chosen_ratio, rejected_ratio = _log_ratios(policy, reference)
    z = beta * (chosen_ratio - rejected_ratio)
    losses = (-(1 - label_smoothing) * F.logsigmoid(z) + label_smoothing * F.logsigmoid(-z)) / (
        1 - 2 * label_smoothing)
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def dpo_hinge(policy: SeqLogps, reference: SeqLogps, beta: float = 0.1, **_) -> PairLoss:
    """Hinge loss on the log-ratio difference (SLiC, Zhao et al. 2023; RSO, Liu et al. 2024).

    ``loss = max(0, 1 - beta h)``.
    """
    chosen_ratio, rejected_ratio = _log_ratios(policy, reference)
    losses = torch.relu(1 - beta * (chosen_ratio - rejected_ratio))
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def dpo_ipo(policy: SeqLogps, reference: SeqLogps, beta: float = 0.1, **_) -> PairLoss:
    """IPO (Azar et al. 2023, eq. 17), with per-token log-ratios.

    ``loss = (h_avg - 1 / (2 beta))^2`` where each log-ratio is divided by its
    completion's token count (``h_avg = ratio_w / |y_w| - ratio_l / |y_l|``), so
    the regression target does not scale with length (the form TRL uses, which
    its authors report the IPO paper's results correspond to). Rewards are the
    summed ``beta * log-ratio``, as for DPO.
    """
    chosen_ratio, rejected_ratio = _log_ratios(policy, reference)
    h_avg = chosen_ratio / policy.chosen_tokens.clamp(min=1) - rejected_ratio / policy.rejected_tokens.clamp(min=1)
    losses = (h_avg - 1 / (2 * beta)) ** 2
    return PairLoss(losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach())


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x < 0, stable at both ends (Maechler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo(policy: SeqLogps, reference: None = None, beta: float = 0.1, **_) -> PairLoss:
    """ORPO's odds-ratio term (Hong et al. 2024, eqs. 4 and 7); no reference model.

    With per-token mean log-probabilities ``a_w``, ``a_l`` (the paper's
    length-normalised P(y|x)), ``log odds(y) = a - log(1 - exp(a))`` and
    ``loss = -beta log sigma(log odds(y_w) - log odds(y_l))``. The full ORPO
    objective adds the NLL of the chosen reply (registry ``nll_weight`` 1.0).
    Rewards are ``beta * a``.
    """
    # a mean log-prob of exactly 0 (every token certain, possible in fp32) would make log(1 - p) infinite
    avg_chosen, avg_rejected = (t.float().clamp(max=-1e-6) for t in policy.averages())
    log_odds = (avg_chosen - avg_rejected) - (_log1mexp(avg_chosen) - _log1mexp(avg_rejected))
    losses = -beta * F.logsigmoid(log_odds)
    return PairLoss(losses, beta * avg_chosen.detach(), beta * avg_rejected.detach())


def cpo(policy: SeqLogps, reference: None = None, beta: float = 0.1, label_smoothing: float = 0.0,
        **_) -> PairLoss:
    """CPO's preference term (Xu et al. 2024, eq. 3); reference-free DPO with summed log-probs.

    ``loss = -(1 - eps) log sigma(beta (log pi(y_w) - log pi(y_l))) - eps log sigma(-...)``;
    the full CPO objective adds the chosen-reply NLL (``alpha``, default 1.0).
    Rewards are ``beta * log pi(y|x)``.
    """
    losses = _smoothed_sigmoid(beta * (policy.chosen - policy.rejected), label_smoothing)
    return PairLoss(losses, beta * policy.chosen.detach(), beta * policy.rejected.detach())


def simpo(policy: SeqLogps, reference: None = None, beta: float = 2.0, gamma: float = 0.5,
          label_smoothing: float = 0.0, **_) -> PairLoss:
    """SimPO (Meng et al. 2024, eq. 6): length-normalised rewards and a target margin.

    Rewards ``r = beta * a`` with ``a`` the per-token mean log-prob;
    ``loss = -log sigma(r_w - r_l - gamma)`` (label smoothing as in cDPO; the
    paper uses ``gamma / beta`` inside ``beta(...)``, the same thing).
    """
    avg_chosen, avg_rejected = policy.averages()
    losses = _smoothed_sigmoid(beta * (avg_chosen - avg_rejected) - gamma, label_smoothing)
    return PairLoss(losses, beta * avg_chosen.detach(), beta * avg_rejected.detach())


@dataclass(frozen=True)
class UnpairedLoss:
    losses: torch.Tensor  # (examples,)
    rewards: torch.Tensor  # (examples,) detached, beta * log-ratio


def kto(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor,
        beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> UnpairedLoss:
    """KTO (Ethayarajh et al. 2024, eq. 7) for unpaired examples.

    With ``r = log pi(y|x) - log ref(y|x)`` (summed) and the reference point
    ``z0`` (``kl``: a detached, non-negative estimate of KL(pi || ref), made by
    the caller from mismatched prompt-completion pairs):
    desirable ``loss = lambda_D (1 - sigma(beta (r - z0)))``,
    undesirable ``loss = lambda_U (1 - sigma(beta (z0 - r)))``.

    Args:
        policy, reference: (examples,) summed completion log-probs.
        desirable: (examples,) bool.
        kl: scalar z0.
    """
    ratio = policy - reference
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))))
    return UnpairedLoss(losses, beta * ratio.detach())


@dataclass(frozen=True)
class LossSpec:
    """A registry entry: the function, whether it needs a reference model, and the NLL weight field."""

    fn: Callable[..., PairLoss]
    needs_reference: bool
    nll_weight_field: str | None = None  # the recipe field holding the chosen-NLL weight, if any


# method -> loss name -> spec. The recipe selects one (``dpo.loss: ipo``) and it is checked at load.
PAIR_LOSSES: dict[str, dict[str, LossSpec]] = {
    "dpo": {
        "sigmoid": LossSpec(dpo_sigmoid, True, "nll_weight"),
        "robust": LossSpec(dpo_robust, True, "nll_weight"),
        "hinge": LossSpec(dpo_hinge, True, "nll_weight"),
        "ipo": LossSpec(dpo_ipo, True, "nll_weight"),
    },
    "orpo": {"odds_ratio": LossSpec(orpo, False, "nll_weight")},
    "cpo": {"sigmoid": LossSpec(cpo, False, "nll_weight")},
    "simpo": {"sigmoid": LossSpec(simpo, False, "nll_weight")},
}
