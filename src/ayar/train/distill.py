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
the student's tokenizer (:func:`check_shared_tokenizer`). Its log-probs come either

- on the fly, under ``no_grad``, on the same batch: at the target positions both models'
  full-vocabulary logits are materialised (fp32), so the head's memory is (target tokens x
  vocabulary) for each model; or
- precomputed once before training (:mod:`ayar.train.teacher`): the teacher's top-k tokens and
  log-probs per target position ride along with each example (:class:`TaughtExample`), and the
  loss is :func:`topk_forward_kl`, the KL over those k tokens plus one bucket for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def topk_forward_kl(student_logits: torch.Tensor, top_ids: torch.Tensor, top_logps: torch.Tensor,
                    rest_logp: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Forward KL on the teacher's top-k tokens plus one bucket for the rest of the vocabulary, per row.

    With S the teacher's k most likely tokens at temperature T, p = softmax(z_teacher / T) (stored),
    q = softmax(z_student / T), and the rest bucket R = vocabulary minus S holding
    p_R = sum_{v in R} p_v and q_R = sum_{v in R} q_v::

        T**2 * [ sum_{v in S} p_v (log p_v - log q_v) + p_R (log p_R - log q_R) ]

    This is KL(p || q) between the two distributions merged onto the k + 1 outcomes {v in S} and R.
    By the log-sum inequality it is at most the full KL, with equality when q is proportional to p
    inside R, in particular when k is the vocabulary size (R empty: exactly :func:`forward_kl`). The
    student learns the teacher's top-k probabilities and the total mass it leaves to the rest, not
    how that rest is shared out. Truncating to the top k biases the student towards the teacher's
    head (Anshumann et al. 2025, "Sparse Logit Sampling: Accelerating Knowledge Distillation in
    LLMs"); the rest bucket keeps the compared masses summing to one, so the loss stays a KL.

    ``log q_R`` is a log-sum-exp over the student's tokens outside S (the top-k masked to -inf),
    not ``log(1 - sum q_S)``, which cancels catastrophically when the student is confident.

    Args:
        student_logits: (rows, vocab).
        top_ids: (rows, k) token ids of the teacher's top k, distinct per row.
        top_logps: (rows, k) the teacher's log p_v at temperature T for those tokens.
        rest_logp: (rows,) the teacher's log p_R (-inf when R is empty or its mass underflowed).
        temperature: T > 0, the temperature ``top_logps`` were computed at.

    Returns:
        (rows,) fp32.
    """
    t = float(temperature)
    scaled = student_logits.float() / t  # (rows, vocab)
    log_q = F.log_softmax(scaled, dim=-1)
    ids = top_ids.long()
    p_top = top_logps.float().exp()  # (rows, k)
    kl = (p_top * (top_logps.float() - log_q.gather(1, ids))).sum(dim=-1)
    if ids.shape[1] < scaled.shape[1]:  # R is not empty: add the rest bucket
        log_q_rest = torch.logsumexp(scaled.scatter(1, ids, float("-inf")), dim=-1) - torch.logsumexp(scaled, dim=-1)
        rest = rest_logp.float()
        has_rest = torch.isfinite(rest)  # p_R = 0 contributes 0 (0 log 0 = 0), not NaN
        safe = torch.where(has_rest, rest, torch.zeros_like(rest))
        kl = kl + torch.where(has_rest, safe.exp() * (safe - log_q_rest), torch.zeros_like(rest))
    return kl * t * t


def teacher_topk(teacher_logits: torch.Tensor, k: int, temperature: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What :func:`topk_forward_kl` needs from the teacher, from its logits at the target positions.

    Args:
        teacher_logits: (rows, vocab).
        k: tokens kept per row (at most the vocabulary size).

    Returns:
        ``(ids (rows, k) int32, log p (rows, k) fp32, log p_R (rows,) fp32)``, the ids by descending
        probability; log p_R is -inf when k is the vocabulary size.
    """
    log_p = F.log_softmax(teacher_logits.float() / float(temperature), dim=-1)  # (rows, vocab)
    values, ids = log_p.topk(k, dim=-1)
    if k < log_p.shape[1]:
        rest = torch.logsumexp(log_p.scatter(1, ids, float("-inf")), dim=-1)
    else:
        rest = torch.full((log_p.shape[0],), float("-inf"), device=log_p.device)
    return ids.to(torch.int32), values, rest


@dataclass(frozen=True)
class TaughtExample:
    """An SFT example with the teacher's precomputed top-k, one row per target position (in order).

    ``top_ids`` (n_targets, k) int32, ``top_logps`` (n_targets, k) and ``rest_logp`` (n_targets,) fp32.
    """

    input_ids: list[int]
    labels: list[int]
    top_ids: torch.Tensor
    top_logps: torch.Tensor
    rest_logp: torch.Tensor


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


TOPK_KEYS = ("teacher_ids", "teacher_logps", "teacher_rest")  # batch keys of the precomputed top-k


class DistillObjective:
    """Forward-KL distillation from a frozen teacher, optionally mixed with SFT cross-entropy.

    ``teacher`` None: the examples are :class:`TaughtExample` and carry the teacher's top-k.
    """

    needs_reference = False

    def __init__(self, teacher: nn.Module | None, temperature: float = 1.0, kl_weight: float = 1.0,
                 sft_weight: float = 0.0):
        self.teacher, self.temperature = teacher, temperature
        self.kl_weight, self.sft_weight = kl_weight, sft_weight

    def wrap(self, model: nn.Module) -> nn.Module:
        return _DistillTerms(model, self)

    def collate(self, examples: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate(examples, pad_id)
        if isinstance(examples[0], TaughtExample):  # rows in the order the loss visits target positions
            batch["teacher_ids"] = torch.cat([e.top_ids for e in examples])  # (n_targets, k)
            batch["teacher_logps"] = torch.cat([e.top_logps for e in examples])  # (n_targets, k)
            batch["teacher_rest"] = torch.cat([e.rest_logp for e in examples])  # (n_targets,)
        return batch

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"tokens": float(count_targets(batch["labels"]))}

    def silence(self, batch: dict[str, torch.Tensor]) -> None:
        batch["labels"].fill_(IGNORE)
        for key in TOPK_KEYS:  # no target positions left: no teacher rows either
            if key in batch:
                batch[key] = batch[key][:0]


class _DistillTerms(nn.Module):
    def __init__(self, model: nn.Module, objective: DistillObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, teacher_ids: torch.Tensor | None = None,
                teacher_logps: torch.Tensor | None = None, teacher_rest: torch.Tensor | None = None):
        obj = self.objective
        student, targets = target_logits(self.model, input_ids, labels, attention_mask, position_ids)
        if teacher_ids is not None:
            if teacher_ids.shape[0] != student.shape[0]:
                raise ValueError(f"the batch carries the teacher's top-k for {teacher_ids.shape[0]} target positions "
                                 f"but has {student.shape[0]}")
            kl = topk_forward_kl(student, teacher_ids, teacher_logps, teacher_rest, obj.temperature).sum()
        else:
            if obj.teacher is None:
                raise ValueError("no teacher and no precomputed top-k in the batch")
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
