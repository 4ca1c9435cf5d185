"""Preference losses: hand-derived values, and parity with TRL's own computations on the same log-probs."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ayar.train.preference_losses import (
    PAIR_LOSSES,
    SeqLogps,
    cpo,
    dpo_hinge,
    dpo_ipo,
    dpo_robust,
    dpo_sigmoid,
    kto,
    orpo,
    simpo,
)

# One pair, worked by hand: policy log p(chosen) = -2 over 2 tokens, log p(rejected) = -3 over 4 tokens;
# reference -2.5 for both. Log-ratios: chosen +0.5, rejected -0.5, so h = 1.0; with beta = 0.5, beta*h = 0.5.
POLICY = SeqLogps(torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([2]), torch.tensor([4]))
REFERENCE = SeqLogps(torch.tensor([-2.5]), torch.tensor([-2.5]), torch.tensor([2]), torch.tensor([4]))
NEG_LOGSIG_HALF = math.log(1 + math.exp(-0.5))  # -log sigma(0.5) = 0.474077
NEG_LOGSIG_MINUS_HALF = math.log(1 + math.exp(0.5))  # -log sigma(-0.5) = 0.974077


def _close(t: torch.Tensor, value: float, tol: float = 1e-6) -> None:
    assert abs(float(t) - value) < tol, (float(t), value)


def test_dpo_sigmoid_by_hand():
    out = dpo_sigmoid(POLICY, REFERENCE, beta=0.5)
    _close(out.losses[0], 0.474077, 1e-6)
    _close(out.chosen_rewards[0], 0.25)  # beta * 0.5
    _close(out.rejected_rewards[0], -0.25)


def test_conservative_dpo_by_hand():
    # cDPO, eps = 0.1: 0.9 * 0.474077 + 0.1 * 0.974077 = 0.524077
    _close(dpo_sigmoid(POLICY, REFERENCE, beta=0.5, label_smoothing=0.1).losses[0], 0.524077, 1e-6)


def test_robust_dpo_by_hand():
    # (0.9 * 0.474077 - 0.1 * 0.974077) / (1 - 0.2) = 0.329262 / 0.8 = 0.411577
    _close(dpo_robust(POLICY, REFERENCE, beta=0.5, label_smoothing=0.1).losses[0], 0.411577, 1e-6)
    # eps = 0 is plain DPO
    _close(dpo_robust(POLICY, REFERENCE, beta=0.5).losses[0], NEG_LOGSIG_HALF)


def test_hinge_by_hand():
    _close(dpo_hinge(POLICY, REFERENCE, beta=0.5).losses[0], 0.5)  # max(0, 1 - 0.5)
    _close(dpo_hinge(POLICY, REFERENCE, beta=2.0).losses[0], 0.0)  # max(0, 1 - 2)


def test_ipo_by_hand():
    # per-token log-ratios: 0.5 / 2 - (-0.5) / 4 = 0.375; target 1 / (2 * 0.5) = 1; (0.375 - 1)^2 = 0.390625
    _close(dpo_ipo(POLICY, REFERENCE, beta=0.5).losses[0], 0.390625)


def test_orpo_by_hand():
    # mean log-probs: chosen -2/2 = -1, rejected -3/4 = -0.75
    # log odds(-1) = -1 - log(1 - e^-1) = -0.541325; log odds(-0.75) = -0.75 - log(1 - e^-0.75) = -0.110647
    # difference -0.430678; -log sigma(-0.430678) = 0.931495; times beta 0.5 = 0.465747
    out = orpo(POLICY, beta=0.5)
    _close(out.losses[0], 0.465747, 1e-6)
    _close(out.chosen_rewards[0], -0.5)  # beta * mean log-prob
    _close(out.rejected_rewards[0], -0.375)


def test_orpo_stays_finite_when_every_token_is_certain():
    # in fp32 a log-prob can be exactly 0; log(1 - exp(0)) would be -inf and the gradient NaN
    chosen = torch.tensor([0.0], requires_grad=True)
    out = orpo(SeqLogps(chosen, torch.tensor([-3.0]), torch.tensor([2]), torch.tensor([2])), beta=0.1)
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(chosen.grad).all()
    out = orpo(SeqLogps(torch.tensor([-3.0]), torch.tensor([0.0]), torch.tensor([2]), torch.tensor([2])), beta=0.1)
    assert torch.isfinite(out.losses).all()


def test_cpo_by_hand():
    # reference-free: beta * (-2 - (-3)) = 0.5 -> 0.474077; rewards beta * summed log-probs
    out = cpo(POLICY, beta=0.5)
    _close(out.losses[0], NEG_LOGSIG_HALF)
    _close(out.chosen_rewards[0], -1.0)
    _close(out.rejected_rewards[0], -1.5)


def test_simpo_by_hand():
    # beta * (mean chosen - mean rejected) - gamma = 2 * (-1 + 0.75) - 0.5 = -1.0; -log sigma(-1) = 1.313262
    out = simpo(POLICY, beta=2.0, gamma=0.5)
    _close(out.losses[0], 1.313262, 1e-6)
    _close(out.chosen_rewards[0], -2.0)
    _close(out.rejected_rewards[0], -1.5)


def test_kto_by_hand():
    # desirable, log-ratio +0.5, z0 = 0.2: 1 - sigma(0.5 * 0.3) = 0.462570
    # undesirable, log-ratio -0.5, weight 2: 2 * (1 - sigma(0.5 * 0.7)) = 0.826765
    out = kto(torch.tensor([-2.0, -3.0]), torch.tensor([-2.5, -2.5]), torch.tensor([True, False]),
              torch.tensor(0.2), beta=0.5, desirable_weight=1.0, undesirable_weight=2.0)
    _close(out.losses[0], 0.462570, 1e-6)
    _close(out.losses[1], 0.826765, 1e-6)
    _close(out.rewards[0], 0.25)
    _close(out.rewards[1], -0.25)


def test_registry_names_every_loss_and_which_need_a_reference():
    assert set(PAIR_LOSSES["dpo"]) == {"sigmoid", "robust", "hinge", "ipo"}
    assert all(spec.needs_reference for spec in PAIR_LOSSES["dpo"].values())
    assert not any(PAIR_LOSSES[m][name].needs_reference for m in ("orpo", "cpo", "simpo") for name in PAIR_LOSSES[m])


def test_a_misspelt_loss_fails_when_the_recipe_loads():
    from ayar.errors import RecipeError
    from ayar.recipe import validate_recipe

    with pytest.raises(RecipeError, match="dpo.loss"):
        validate_recipe({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "method": "dpo",
                         "dpo": {"loss": "sigmod"}})
    with pytest.raises(RecipeError, match="label_smoothing applies to the sigmoid and robust"):
        validate_recipe({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "method": "dpo",
                         "dpo": {"loss": "hinge", "label_smoothing": 0.1}})
    with pytest.raises(RecipeError, match="method is 'dpo'"):
        validate_recipe({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "method": "dpo", "kto": {}})


# ----------------------------------------------------------------------------- parity with TRL


def _random_logps(n: int, seed: int, dtype=torch.float64) -> tuple[SeqLogps, SeqLogps]:
    g = torch.Generator().manual_seed(seed)
    counts_c = torch.randint(1, 9, (n,), generator=g)
    counts_r = torch.randint(1, 9, (n,), generator=g)
    pol = SeqLogps(-torch.rand(n, generator=g, dtype=dtype) * counts_c * 3,
                   -torch.rand(n, generator=g, dtype=dtype) * counts_r * 3, counts_c, counts_r)
    ref = SeqLogps(pol.chosen + torch.randn(n, generator=g, dtype=dtype),
                   pol.rejected + torch.randn(n, generator=g, dtype=dtype), counts_c, counts_r)
    return pol, ref


class _Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(t):
        return t

    gather_for_metrics = gather


def _trl_self(**kw) -> SimpleNamespace:
    """The attributes TRL's loss methods read from ``self``; the methods run unchanged."""
    base = dict(model=SimpleNamespace(training=True), accelerator=_Accelerator(), aux_loss_enabled=False,
                ld_alpha=None, f_divergence_type="reverse_kl", use_weighting=False, loss_weights=[1.0],
                _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
                precompute_ref_logps=True, label_smoothing=0.0, calculate_KL=True, desirable_weight=1.0,
                undesirable_weight=1.0)
    base.update(kw)
    return SimpleNamespace(**base)


def _per_token(sums: torch.Tensor, counts: torch.Tensor, width: int) -> torch.Tensor:
    """Per-token log-probs whose row sums are ``sums`` over the first ``counts`` positions."""
    rows = torch.zeros(len(sums), width, dtype=sums.dtype)
    for i, (s, c) in enumerate(zip(sums, counts, strict=True)):
        rows[i, : int(c)] = s / int(c)
    return rows


def _trl_dpo_inputs(pol: SeqLogps, ref: SeqLogps):
    """A DPO batch as TRL's collator makes it (one prompt token, then the completion) and a model that
    returns the given per-token log-probs."""
    counts = torch.cat([pol.chosen_tokens, pol.rejected_tokens])
    width = int(counts.max()) + 1
    completion_mask = torch.zeros(len(counts), width, dtype=torch.long)
    for i, c in enumerate(counts):
        completion_mask[i, 1 : 1 + int(c)] = 1
    per_token = _per_token(torch.cat([pol.chosen, pol.rejected]), counts, width - 1)
    inputs = {"input_ids": torch.ones_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "ref_chosen_logps": ref.chosen, "ref_rejected_logps": ref.rejected}

    def model(**kwargs):
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    return inputs, model


@pytest.mark.parametrize("loss,smoothing", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("robust", 0.2)])
def test_dpo_losses_equal_trl(loss, smoothing):
    from trl import DPOTrainer

    pol, ref = _random_logps(16, seed=1)
    inputs, model = _trl_dpo_inputs(pol, ref)
    trl_self = _trl_self(beta=0.3, loss_types=[loss], label_smoothing=smoothing)
    expected = DPOTrainer._compute_loss(trl_self, model, inputs, return_outputs=False)
    ours = PAIR_LOSSES["dpo"][loss].fn(pol, ref, beta=0.3, label_smoothing=smoothing)
    assert abs(float(ours.losses.mean()) - float(expected)) < 1e-6
    metrics = trl_self._metrics["train"]
    assert abs(float(ours.chosen_rewards.mean()) - metrics["rewards/chosen"][0]) < 1e-6
    assert abs(float((ours.chosen_rewards > ours.rejected_rewards).double().mean())
               - metrics["rewards/accuracies"][0]) < 1e-6


def test_conservative_dpo_differs_from_trl_on_purpose():
    """TRL (1.x) no longer applies label_smoothing to its sigmoid loss; ayar keeps cDPO (Mitchell 2023),
    so with eps > 0 the two differ, and with eps = 0 they agree (previous test)."""
    from trl import DPOTrainer

    pol, ref = _random_logps(8, seed=2)
    inputs, model = _trl_dpo_inputs(pol, ref)
    trl_loss = DPOTrainer._compute_loss(_trl_self(beta=0.3, loss_types=["sigmoid"], label_smoothing=0.2), model,
                                        inputs, return_outputs=False)
    ours = dpo_sigmoid(pol, ref, beta=0.3, label_smoothing=0.2).losses.mean()
    assert abs(float(ours) - float(trl_loss)) > 1e-3


@pytest.mark.parametrize("loss_type", ["sigmoid", "simpo"])
def test_cpo_and_simpo_equal_trl(loss_type):
    from trl.experimental.cpo import CPOTrainer

    pol, _ = _random_logps(16, seed=3)
    trl_self = _trl_self(beta=0.7, loss_type=loss_type, simpo_gamma=0.4, alpha=0.0, label_smoothing=0.1)
    if loss_type == "simpo":  # TRL's CPOTrainer passes per-token means for simpo
        avg_c, avg_r = pol.averages()
        expected = CPOTrainer.cpo_loss(trl_self, avg_c, avg_r)
        ours = simpo(pol, beta=0.7, gamma=0.4, label_smoothing=0.1)
    else:
        expected = CPOTrainer.cpo_loss(trl_self, pol.chosen, pol.rejected)
        ours = cpo(pol, beta=0.7, label_smoothing=0.1)
    for a, b in zip((ours.losses, ours.chosen_rewards, ours.rejected_rewards), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_orpo_equals_trl():
    from trl.experimental.orpo import ORPOTrainer

    pol, _ = _random_logps(16, seed=4)
    avg_c, avg_r = pol.averages()
    losses, chosen_r, rejected_r, _, _ = ORPOTrainer.odds_ratio_loss(_trl_self(beta=0.25), avg_c, avg_r)
    ours = orpo(pol, beta=0.25)
    # TRL returns beta * log sigma(log odds) and subtracts it from the NLL; ayar returns the loss term itself.
    torch.testing.assert_close(ours.losses, -losses, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.chosen_rewards, chosen_r, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.rejected_rewards, rejected_r, atol=1e-6, rtol=0)


def test_kto_equals_trl_with_an_unbalanced_mix():
    from trl import KTOTrainer

    g = torch.Generator().manual_seed(5)
    n = 12
    desirable = torch.tensor([True] * 9 + [False] * 3)
    counts = torch.randint(1, 7, (n,), generator=g)
    policy = -torch.rand(n, generator=g, dtype=torch.float64) * counts * 2
    reference = policy + torch.randn(n, generator=g, dtype=torch.float64) * 0.5
    policy_kl = -torch.rand(n, generator=g, dtype=torch.float64) * 10
    reference_kl = policy_kl - torch.rand(n, generator=g, dtype=torch.float64)  # KL estimate > 0
    width = int(counts.max()) + 1
    completion_mask = torch.zeros(n, width, dtype=torch.long)
    for i, c in enumerate(counts):
        completion_mask[i, 1 : 1 + int(c)] = 1
    per_token = _per_token(policy, counts, width - 1)

    def model(**kwargs):
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    trl_self = _trl_self(beta=0.2, loss_type="kto", desirable_weight=1.0, undesirable_weight=3.0,
                         _compute_kl_logps=lambda model, batch: policy_kl)
    inputs = {"input_ids": torch.ones_like(completion_mask), "attention_mask": torch.ones_like(completion_mask),
              "completion_mask": completion_mask, "label": desirable, "ref_logps": reference,
              "ref_KL_logps": reference_kl}
    expected = KTOTrainer._compute_loss(trl_self, model, inputs, return_outputs=False)
    kl = (policy_kl - reference_kl).mean().clamp(min=0)
    ours = kto(policy, reference, desirable, kl, beta=0.2, desirable_weight=1.0, undesirable_weight=3.0)
    assert abs(float(ours.losses.mean()) - float(expected)) < 1e-6
    assert abs(float(kl) - trl_self._metrics["train"]["kl"][0]) < 1e-6
