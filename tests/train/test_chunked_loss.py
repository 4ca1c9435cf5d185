"""The chunked target-only head (ayar.train.losses.target_logps) equals the plain full-logits computation."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM

from ayar.train.losses import IGNORE, TargetLoss, auto_chunk_size, target_logps
from ayar.train.objectives import sequence_logps

TOL = {"rtol": 1e-6, "atol": 1e-6}


class Head(nn.Module):
    """The two things target_logps reads from a causal LM: its output layer and its config."""

    def __init__(self, hidden: int, vocab: int, bias: bool, softcap: float | None = None):
        super().__init__()
        self.lm_head = nn.Linear(hidden, vocab, bias=bias)
        self.config = types.SimpleNamespace(final_logit_softcapping=softcap, model_type="test")

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


def reference_logps(head: Head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head.lm_head(hidden).float()  # (positions, vocab), all at once
    cap = head.config.final_logit_softcapping
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return -F.cross_entropy(logits, targets, reduction="none")


def grads_of(head: Head, hidden: torch.Tensor, fn, upstream: torch.Tensor) -> tuple[torch.Tensor, list]:
    head.zero_grad(set_to_none=True)
    h = hidden.clone().requires_grad_(True)
    out = fn(h)
    (out * upstream).sum().backward()
    return out.detach(), [h.grad] + [p.grad for p in head.parameters() if p.requires_grad]


@pytest.mark.parametrize("chunk", [1, 5, 16, 37, 100])
@pytest.mark.parametrize("trained_head", [False, True])  # frozen head: gradients taken in the forward
@pytest.mark.parametrize("softcap", [None, 3.0])
def test_chunked_logps_and_gradients_equal_unchunked(chunk, trained_head, softcap):
    torch.manual_seed(0)
    head = Head(16, 50, bias=trained_head, softcap=softcap)
    head.requires_grad_(trained_head)
    hidden = torch.randn(37, 16)  # 37 positions: chunks of 5 and 16 leave a short last chunk
    targets = torch.randint(0, 50, (37,))
    upstream = torch.randn(37)  # a different gradient per position, as a DPO row weight gives
    want, want_grads = grads_of(head, hidden, lambda h: reference_logps(head, h, targets), upstream)
    got, got_grads = grads_of(head, hidden, lambda h: target_logps(head, h, targets, chunk), upstream)
    torch.testing.assert_close(got, want, **TOL)
    assert len(got_grads) == (3 if trained_head else 1)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, **TOL)


def test_no_targets_gives_an_empty_result_and_zero_gradients():
    head = Head(8, 20, bias=False)
    hidden = torch.randn(0, 8, requires_grad=True)
    out = target_logps(head, hidden, torch.zeros(0, dtype=torch.long), chunk_size=4)
    assert out.shape == (0,)
    out.sum().backward()
    assert hidden.grad.shape == (0, 8)
    assert float(head.lm_head.weight.grad.abs().sum()) == 0.0


def test_auto_chunk_bounds_one_chunk_of_logits():
    assert auto_chunk_size(32000) == 262
    assert auto_chunk_size(262144) == 32
    assert auto_chunk_size(10**9) == 16 and auto_chunk_size(10) == 4096
    assert auto_chunk_size(151936, "cuda") == 220
    with pytest.raises(ValueError, match="at least 1"):
        target_logps(Head(4, 6, bias=False), torch.randn(2, 4), torch.zeros(2, dtype=torch.long), chunk_size=-1)


def _batch(vocab: int) -> dict:
    """Three rows with ignored prompt positions, right padding, and one row with no target at all."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, vocab, (3, 12), generator=g)
    labels = ids.clone()
    labels[:, :5] = IGNORE  # prompts
    labels[1, 9:] = IGNORE  # padding
    labels[2] = IGNORE  # nothing to learn in this row
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _full_logits_loss(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed target log-probs from the model's own full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    logps = -F.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return (logps * targets.ne(IGNORE)).sum(dim=1), targets.ne(IGNORE).sum(dim=1)


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_target_loss_and_sequence_logps_equal_full_logits_on_a_model(tiny_llama, chunk):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    want_rows, want_counts = _full_logits_loss(model, batch)
    (-want_rows.sum()).backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    loss_sum, n = TargetLoss(model, chunk)(**batch)
    torch.testing.assert_close(loss_sum, -want_rows.sum(), **TOL)
    assert int(n) == int(want_counts.sum())
    loss_sum.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], rtol=1e-5, atol=1e-6, msg=name)

    with torch.no_grad():
        sums, counts = sequence_logps(model, batch["input_ids"], batch["labels"], batch["attention_mask"], chunk)
    torch.testing.assert_close(sums, want_rows.detach(), **TOL)
    assert counts.tolist() == want_counts.tolist() and sums[2] == 0
