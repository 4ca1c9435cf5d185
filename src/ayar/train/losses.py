"""Token-level language-modelling loss, computed only where there is something to learn.

The model's backbone produces hidden states for every position, but the output
projection (the largest matmul for small models: hidden x vocab) is applied only
at positions whose next token is a target. For SFT, where the prompt is often
most of the sequence, this skips most of the vocabulary-sized logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers ``*ForCausalLM`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def scale_logits(config, logits: torch.Tensor) -> torch.Tensor:
    """Apply the output transforms some architectures put after ``lm_head``.

    Gemma 2/3 cap logits with ``c * tanh(x / c)``; Cohere multiplies by
    ``logit_scale``; Granite divides by ``logits_scaling``.
    """
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    if getattr(config, "logit_scale", None) is not None and config.model_type.startswith("cohere"):
        logits = logits * config.logit_scale
    if getattr(config, "logits_scaling", None):
        logits = logits / config.logits_scaling
    return logits


class TargetLoss(nn.Module):
    """Wraps a causal LM; ``forward`` returns the summed cross-entropy over target tokens.

    Returning a sum (and leaving the division to the caller) is what makes
    gradient accumulation exact: the loop divides every micro-batch's sum by the
    number of target tokens in the whole optimizer step.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,  # (batch, seq)
        labels: torch.Tensor,  # (batch, seq), IGNORE where no loss
        attention_mask: torch.Tensor | None = None,  # (batch, seq); None for packed rows
        position_ids: torch.Tensor | None = None,  # (batch, seq); restarts at 0 per packed example
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inner = unwrap(self.model)
        backbone = getattr(inner, inner.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (batch, seq, hidden)
        # Position t predicts token t+1: shift labels left, drop the last hidden state.
        targets = labels[:, 1:]
        mask = targets.ne(IGNORE)  # (batch, seq-1)
        picked = hidden[:, :-1][mask]  # (n_targets, hidden)
        logits = scale_logits(inner.config, inner.get_output_embeddings()(picked).float())  # (n_targets, vocab)
        loss_sum = F.cross_entropy(logits, targets[mask], reduction="sum")
        return loss_sum, mask.sum()


def count_targets(labels: torch.Tensor) -> int:
    """Number of target tokens in a batch of labels (after the causal shift)."""
    return int(labels[:, 1:].ne(IGNORE).sum())
