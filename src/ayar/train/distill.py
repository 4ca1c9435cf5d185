"""Logit distillation (``method: distill``): the student learns the teacher's token distributions.

At every target token of an SFT example the student is trained towards the teacher's whole
next-token distribution, not only the token in the data (Hinton et al. 2015, "Distilling the
Knowledge in a Neural Network"). With temperature T, p = softmax(z_teacher / T) and
q = softmax(z_student / T), the loss per target position is the forward KL divergence

    KL(p || q) * T**2 = T**2 * sum_v p_v (log p_v - log q_v)

(T**2 keeps the gradient's scale independent of T), optionally mixed with the usual SFT
cross-entropy on the data's token:

    loss = kl_weight * T**2 * KL(p || q) + sft_weight * (-log softmax(z_student)[target])

Both terms are summed over target tokens and divided by their number over the optimizer step, like
SFT, so gradient accumulation stays exact. The teacher is a frozen model on this machine that shares
the student's tokenizer (:func:`check_shared_tokenizer`); its logits are computed on the fly, under
``no_grad``, on the same batch. At the target positions both models' full-vocabulary logits are
materialised (fp32), so the head's memory is (target tokens x vocabulary) for each model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.errors import AyarError
from ayar.train.batching import collate
from ayar.train.losses import count_targets, scale_logits, unwrap


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T**2 * KL(softmax(teacher / T) || softmax(student / T)) per row.

    Args:
        student_logits, teacher_logits: (rows, vocab).
        temperature: T > 0; above 1 softens both distributions.

    Returns:
        (rows,) fp32, 0 where the two distributions are equal.
    """
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1) * t * t


def target_logits(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                  attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the positions whose next token is a target, and those targets.

    Returns:
        ``(logits (n_targets, vocab) fp32, targets (n_targets,))``.
    """
    inner = unwrap(model)
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      use_cache=False).last_hidden_state  # (batch, seq, hidden)
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE)  # position t predicts token t+1
    logits = inner.get_output_embeddings()(hidden[:, :-1][mask]).float()  # (n_targets, vocab)
    return scale_logits(inner.config, logits), targets[mask]


class DistillObjective:
    """Forward-KL distillation from a frozen teacher, optionally mixed with SFT cross-entropy."""

    needs_reference = False

    def __init__(self, teacher: nn.Module, temperature: float = 1.0, kl_weight: float = 1.0,
                 sft_weight: float = 0.0):
        self.teacher, self.temperature = teacher, temperature
        self.kl_weight, self.sft_weight = kl_weight, sft_weight

    def wrap(self, model: nn.Module) -> nn.Module:
        return _DistillTerms(model, self)

    def collate(self, examples: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(examples, pad_id)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"tokens": float(count_targets(batch["labels"]))}

    def silence(self, batch: dict[str, torch.Tensor]) -> None:
        batch["labels"].fill_(IGNORE)


class _DistillTerms(nn.Module):
    def __init__(self, model: nn.Module, objective: DistillObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None):
        obj = self.objective
        student, targets = target_logits(self.model, input_ids, labels, attention_mask, position_ids)
        with torch.no_grad():
            device = next(obj.teacher.parameters()).device
            teacher, _ = target_logits(obj.teacher, input_ids.to(device), labels.to(device),
                                       None if attention_mask is None else attention_mask.to(device),
                                       None if position_ids is None else position_ids.to(device))
        kl = forward_kl(student, teacher.to(student.device), obj.temperature).sum()
        nll = -F.log_softmax(student, dim=-1).gather(1, targets[:, None]).sum()
        n = torch.tensor(float(targets.numel()), device=student.device)
        loss = obj.kl_weight * kl + (obj.sft_weight * nll if obj.sft_weight else 0.0)
        return {"tokens": loss}, {"distill/kl": (kl.detach(), n), "distill/nll": (nll.detach(), n)}


def check_shared_tokenizer(student_tokenizer, teacher_tokenizer, student_vocab: int, teacher_vocab: int,
                           teacher_name: str) -> None:
    """Logit distillation compares distributions token by token: both models must share one vocabulary.

    Raises:
        AyarError: the tokenizers map tokens to different ids, or the output heads differ in size.
    """
    s, t = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if s != t:
        differ = sum(1 for tok, i in s.items() if t.get(tok) != i) + sum(1 for tok in t if tok not in s)
        raise AyarError(f"distill.teacher: {teacher_name} does not share the student's tokenizer ({len(t)} vs "
                        f"{len(s)} tokens, {differ} differ); logit distillation needs one vocabulary. Use a teacher "
                        "of the same family, or sequence-level distillation (`ayar synth` with task: answer, then "
                        "sft)")
    if student_vocab != teacher_vocab:
        raise AyarError(f"distill.teacher: {teacher_name}'s output head scores {teacher_vocab} tokens, the "
                        f"student's {student_vocab}; logit distillation needs heads of one size")
