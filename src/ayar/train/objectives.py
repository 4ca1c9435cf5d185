"""Training objectives: what a micro-batch looks like and what loss it contributes.

The loop (:mod:`ayar.train.loop`) is the same for every method; an objective
tells it how to collate examples, and its module returns *summed* loss terms,
each with the name of the count it is normalised by::

    module(**batch) -> (terms: {count name: summed loss}, stats: {name: (sum, count)})

and ``objective.counts(batch)`` gives the counts. The loop divides each term by
its count summed over the whole optimizer step and all processes, so gradient
accumulation equals one large batch: language modelling normalises by target
tokens; preference losses by pairs, plus (ORPO, CPO) the chosen-reply NLL by
chosen tokens — the same normalisation TRL uses for one batch.

Reference log-probabilities come from the policy with its adapter disabled,
from a frozen copy, or from a cache computed once before training
(:func:`precompute_reference`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.train.batching import collate
from ayar.train.losses import TargetLoss, count_targets, target_logps, unwrap
from ayar.train.preference_data import KtoItem, PairExample
from ayar.train.preference_losses import PAIR_LOSSES, LossSpec, SeqLogps, kto

if TYPE_CHECKING:
    from ayar.recipe import Recipe

Batch = dict[str, torch.Tensor]  # collated micro-batch: input_ids, labels, attention_mask, ... (rows, seq)
Terms = dict[str, torch.Tensor]  # count name -> summed loss term (a scalar)
Stats = dict[str, tuple[torch.Tensor, torch.Tensor]]  # statistic name -> (sum, count), reduced as sum / count


@runtime_checkable
class Objective(Protocol):
    """What the training loop needs from a method: batches, loss terms, and the counts they are normalised by.

    ``wrap(model)`` returns a module called as ``module(**batch) -> (Terms, Stats)``; the loop
    divides each term by ``counts(batch)[name]`` summed over the optimizer step and all processes.
    """

    needs_reference: bool

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that turns a batch into (summed loss terms, statistics)."""
        ...

    def collate(self, examples: Sequence[Any], pad_id: int) -> Batch:
        """Pad ``examples`` into one micro-batch (on the CPU)."""
        ...

    def counts(self, batch: Batch) -> dict[str, float]:
        """What each loss term of this batch is normalised by (target tokens, pairs, ...)."""
        ...

    def silence(self, batch: Batch) -> None:
        """Make the batch contribute no loss (a process with no share of a short last batch), in place."""
        ...


@runtime_checkable
class ReferenceObjective(Objective, Protocol):
    """An objective that compares the policy with a reference model (DPO, KTO): its log-probs can be
    computed on the fly or precomputed once (:func:`precompute_reference`)."""

    reference: Reference | None

    def reference_rows(self, policy: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of the batch: (chosen, rejected) per pair, or (completion, KL row) for KTO."""
        ...


def sequence_logps(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None,
                   chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's target tokens, and their count.

    Like :class:`~ayar.train.losses.TargetLoss`, the output projection runs only at
    positions whose next token is a target, ``chunk_size`` of them at a time
    (:func:`~ayar.train.losses.target_logps`).

    Returns:
        ``(sums, counts)``, each of shape (rows,); sums in at least fp32.
    """
    inner = unwrap(model)
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    mask = targets.ne(IGNORE)  # (rows, seq-1)
    token_logps = target_logps(inner, hidden[:, :-1][mask], targets[mask], chunk_size)  # (n_targets,)
    rows = mask.nonzero()[:, 0]
    sums = torch.zeros(input_ids.shape[0], dtype=token_logps.dtype, device=token_logps.device)
    return sums.index_add(0, rows, token_logps), mask.sum(dim=1)


def _pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)] = torch.tensor(i)
        labels[r, : len(lab)] = torch.tensor(lab)
        mask[r, : len(i)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


class Reference:
    """Reference log-probs on the fly: the policy with its adapter disabled, or a frozen copy."""

    def __init__(self, kind: str, model: nn.Module | None = None):
        if kind not in ("adapter_disabled", "copy", "policy"):
            raise ValueError(f"unknown reference kind {kind!r}")
        self.kind, self.model = kind, model

    @torch.no_grad()
    def logps(self, policy: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
              attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "copy":
            device = next(self.model.parameters()).device
            sums, counts = sequence_logps(self.model, input_ids.to(device), labels.to(device),
                                          attention_mask.to(device))
            return sums.to(input_ids.device), counts.to(input_ids.device)
        context = policy.disable_adapter() if self.kind == "adapter_disabled" else contextlib.nullcontext()
        was_training = policy.training
        policy.eval()  # no dropout in the reference, as in a frozen copy and in the precompute pass
        try:
            with context:
                return sequence_logps(policy, input_ids, labels, attention_mask)
        finally:
            policy.train(was_training)


class LMObjective:
    """Next-token cross-entropy over target tokens (pretrain, sft)."""

    needs_reference = False

    def __init__(self, chunk_size: int | None = None):
        self.chunk_size = chunk_size  # target positions per head chunk (None: by vocabulary size)

    def wrap(self, model: nn.Module) -> nn.Module:
        return _LMTerms(model, self.chunk_size)

    def collate(self, examples: Sequence[Any], pad_id: int) -> Batch:
        return collate(examples, pad_id)

    def counts(self, batch: Batch) -> dict[str, float]:
        return {"tokens": float(count_targets(batch["labels"]))}

    def silence(self, batch: Batch) -> None:
        batch["labels"].fill_(IGNORE)


class _LMTerms(nn.Module):
    def __init__(self, model: nn.Module, chunk_size: int | None = None):
        super().__init__()
        self.loss = TargetLoss(model, chunk_size)

    def forward(self, **batch: torch.Tensor) -> tuple[Terms, Stats]:
        loss_sum, _ = self.loss(**batch)
        return {"tokens": loss_sum}, {}


class PairObjective:
    """DPO, ORPO, CPO, SimPO: chosen and rejected rows in one forward pass."""

    def __init__(self, spec: LossSpec, params: dict, nll_weight: float = 0.0, reference: Reference | None = None,
                 chunk_size: int | None = None):
        self.spec, self.params, self.nll_weight, self.reference = spec, params, nll_weight, reference
        self.chunk_size = chunk_size
        self.needs_reference = spec.needs_reference

    def wrap(self, model: nn.Module) -> nn.Module:
        return _PairTerms(model, self)

    def collate(self, examples: Sequence[PairExample], pad_id: int) -> Batch:
        rows = [e.rows()[0] for e in examples] + [e.rows()[1] for e in examples]
        batch = _pad_rows(rows, pad_id)
        return _with_weights_and_refs(batch, examples)

    def counts(self, batch: Batch) -> dict[str, float]:
        n = len(batch["weight"])
        chosen_tokens = batch["labels"][:n, 1:].ne(IGNORE).sum(dim=1).to(batch["weight"].dtype)
        out = {"pairs": float(batch["weight"].sum())}
        if self.nll_weight:
            out["chosen_tokens"] = float((chosen_tokens * batch["weight"]).sum())
        return out

    def silence(self, batch: Batch) -> None:
        batch["weight"].zero_()

    @torch.no_grad()
    def reference_rows(self, policy: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of each pair's chosen and rejected reply."""
        ref = self.reference.logps(policy, batch["input_ids"], batch["labels"], batch["attention_mask"])[0]
        n = batch["weight"].shape[0]
        return ref[:n], ref[n:]


class _PairTerms(nn.Module):
    def __init__(self, model: nn.Module, objective: PairObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                weight: torch.Tensor, ref: torch.Tensor | None = None) -> tuple[Terms, Stats]:
        obj = self.objective
        n = weight.shape[0]
        sums, counts = sequence_logps(self.model, input_ids, labels, attention_mask, obj.chunk_size)
        policy = SeqLogps(sums[:n], sums[n:], counts[:n], counts[n:])
        reference = None
        if obj.needs_reference:
            if ref is None:
                ref_chosen, ref_rejected = obj.reference_rows(self.model, {
                    "input_ids": input_ids, "labels": labels, "attention_mask": attention_mask, "weight": weight})
            else:
                ref_chosen, ref_rejected = ref[:, 0], ref[:, 1]
            reference = SeqLogps(ref_chosen.to(sums.dtype), ref_rejected.to(sums.dtype), counts[:n], counts[n:])
        out = obj.spec.fn(policy, reference, **obj.params)
        w = weight.to(out.losses.dtype)
        terms = {"pairs": (out.losses * w).sum()}
        if obj.nll_weight:
            terms["chosen_tokens"] = -obj.nll_weight * (policy.chosen * w).sum()
        pairs = w.sum()
        chosen, rejected = out.chosen_rewards, out.rejected_rewards
        mean_chosen, mean_rejected = (t.detach() for t in policy.averages())
        stats = {
            "rewards/chosen": ((chosen * w).sum(), pairs),
            "rewards/rejected": ((rejected * w).sum(), pairs),
            "rewards/margins": (((chosen - rejected) * w).sum(), pairs),
            "rewards/accuracy": (((chosen > rejected).to(w.dtype) * w).sum(), pairs),
            "logps/chosen": ((policy.chosen.detach() * w).sum(), pairs),
            "logps/rejected": ((policy.rejected.detach() * w).sum(), pairs),
            # reference-free: the chosen reply has the higher per-token mean log-prob
            "prefers_chosen": (((mean_chosen > mean_rejected).to(w.dtype) * w).sum(), pairs),
        }
        return terms, stats


class KtoObjective:
    """KTO: rated completions, with the KL reference point from mismatched pairs in the micro-batch."""

    needs_reference = True

    def __init__(self, params: dict, reference: Reference | None = None, chunk_size: int | None = None):
        self.params, self.reference, self.chunk_size = params, reference, chunk_size

    def wrap(self, model: nn.Module) -> nn.Module:
        return _KtoTerms(model, self)

    def collate(self, examples: Sequence[KtoItem], pad_id: int) -> Batch:
        batch = _pad_rows([e.rows()[0] for e in examples], pad_id)
        kl = _pad_rows([e.rows()[1] for e in examples], pad_id)
        batch.update({f"kl_{k}": v for k, v in kl.items()})
        batch["desirable"] = torch.tensor([e.desirable for e in examples], dtype=torch.bool)
        return _with_weights_and_refs(batch, examples)

    def counts(self, batch: Batch) -> dict[str, float]:
        return {"examples": float(batch["weight"].sum())}

    def silence(self, batch: Batch) -> None:
        batch["weight"].zero_()

    @torch.no_grad()
    def reference_rows(self, policy: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        ref = self.reference.logps(policy, batch["input_ids"], batch["labels"], batch["attention_mask"])[0]
        ref_kl = self.reference.logps(policy, batch["kl_input_ids"], batch["kl_labels"],
                                      batch["kl_attention_mask"])[0]
        return ref, ref_kl


def _with_weights_and_refs(batch: Batch, examples: Sequence[PairExample] | Sequence[KtoItem]) -> Batch:
    """Add each example's loss weight (1; 0 silences it) and, when precomputed, its reference log-probs."""
    batch["weight"] = torch.ones(len(examples))
    if examples and examples[0].ref is not None:
        batch["ref"] = torch.tensor([e.ref for e in examples], dtype=torch.float64)  # (examples, 2)
    return batch


def _mean_over_processes(value: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``sum(value) / sum(count)`` over all processes (plain division when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        both = torch.stack([value.float(), count.float()])
        torch.distributed.all_reduce(both)
        value, count = both[0], both[1]
    return value / count.clamp(min=1)


class _KtoTerms(nn.Module):
    def __init__(self, model: nn.Module, objective: KtoObjective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
                kl_input_ids: torch.Tensor, kl_labels: torch.Tensor, kl_attention_mask: torch.Tensor,
                desirable: torch.Tensor, weight: torch.Tensor, ref: torch.Tensor | None = None) -> tuple[Terms, Stats]:
        obj = self.objective
        policy, _ = sequence_logps(self.model, input_ids, labels, attention_mask, obj.chunk_size)
        with torch.no_grad():  # the reference point gets no gradient (as in the paper)
            policy_kl, _ = sequence_logps(self.model, kl_input_ids, kl_labels, kl_attention_mask, obj.chunk_size)
        if ref is not None:
            ref, ref_kl = ref[:, 0], ref[:, 1]
        else:
            ref, ref_kl = obj.reference_rows(self.model, {
                "input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                "kl_input_ids": kl_input_ids, "kl_labels": kl_labels, "kl_attention_mask": kl_attention_mask})
        w = weight.to(policy.dtype)
        kl = _mean_over_processes(((policy_kl - ref_kl.to(policy.dtype)) * w).sum(), w.sum()).clamp(min=0)
        out = kto(policy, ref.to(policy.dtype), desirable, kl.detach(), **obj.params)
        good, bad = desirable.to(w.dtype) * w, (~desirable).to(w.dtype) * w
        stats = {
            "rewards/chosen": ((out.rewards * good).sum(), good.sum()),
            "rewards/rejected": ((out.rewards * bad).sum(), bad.sum()),
            "kl": (kl.detach() * w.sum(), w.sum()),
        }
        return {"examples": (out.losses * w).sum()}, stats


# ----------------------------------------------------------------------------- precomputed reference


def files_digest(folder: str | Path) -> str:
    """A digest of a model or adapter folder's weights and config (a hub id hashes as its name)."""
    from ayar.govern.manifest import sha256_file

    folder = Path(folder)
    h = hashlib.sha256()
    if not folder.is_dir():
        h.update(str(folder).encode())
        return h.hexdigest()
    for path in sorted(folder.iterdir()):
        if path.suffix in (".safetensors", ".json") and path.is_file():
            h.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return h.hexdigest()


def cache_dir(configured: str | None, kind: str = "reference") -> Path:
    """Where precomputed ``kind`` files live: ``configured``, else $AYAR_CACHE_DIR or ~/.cache/ayar, then ``kind``."""
    return Path(configured or os.environ.get("AYAR_CACHE_DIR") or Path.home() / ".cache" / "ayar") / kind


def _examples_digest(examples: Sequence) -> str:
    h = hashlib.sha256()
    for e in examples:
        rows = e.rows()
        h.update(json.dumps([rows[0], rows[1]], separators=(",", ":")).encode())
    return h.hexdigest()


def precompute_reference(objective: ReferenceObjective, policy: nn.Module, example_sets: Sequence[Sequence], *,
                         pad_id: int, batch_size: int, amp: torch.dtype | None, device: torch.device,
                         key_parts: dict, folder: str | Path | None,
                         use_cache: bool = True) -> tuple[Path | None, bool]:
    """Fill each example's reference log-probs, from the cache or by one pass with the reference.

    The cache file is named by a hash of ``key_parts`` (model weights, adapter,
    precision, ...) and every example's token ids, so different data or a
    different model never reads a stale entry.

    Returns:
        (cache file or None, whether it was a cache hit).
    """
    from safetensors.torch import load_file, save

    from ayar.fsutil import atomic_write

    key = hashlib.sha256(json.dumps({**key_parts, "examples": [_examples_digest(s) for s in example_sets]},
                                    sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir(folder) / f"{key}.safetensors" if use_cache else None
    if path is not None and path.is_file():
        tensors = load_file(str(path))
        for i, examples in enumerate(example_sets):
            _assign(examples, tensors[f"set{i}_a"].tolist(), tensors[f"set{i}_b"].tolist())
        return path, True
    was_training = policy.training
    policy.eval()
    tensors = {}
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    for i, examples in enumerate(example_sets):
        # longest first, so each batch holds rows of similar length (little padding); results go back in order
        order = sorted(range(len(examples)), key=lambda j: -len(examples[j].input_ids))
        first, second = [0.0] * len(examples), [0.0] * len(examples)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in objective.collate([examples[j] for j in chunk], pad_id).items()}
            with autocast:
                a, b = (t.double().tolist() for t in objective.reference_rows(policy, batch))
            for j, x, y in zip(chunk, a, b, strict=True):
                first[j], second[j] = x, y
        _assign(examples, first, second)
        tensors[f"set{i}_a"] = torch.tensor(first, dtype=torch.float64)
        tensors[f"set{i}_b"] = torch.tensor(second, dtype=torch.float64)
    policy.train(was_training)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as fh:
            fh.write(save(tensors))
    return path, False


def _assign(examples: Sequence[PairExample] | Sequence[KtoItem], first: list[float], second: list[float]) -> None:
    for e, a, b in zip(examples, first, second, strict=True):
        e.ref = (a, b)


def make_objective(recipe: Recipe, reference: Reference | None, teacher: nn.Module | None = None) -> Objective:
    """The objective for the recipe's method (a language-modelling one for pretrain and sft).

    ``teacher``: distill's teacher on the fly; None when its top-k were precomputed into the examples.
    """
    cfg = recipe.method_config()
    chunk = recipe.train.loss_chunk_size
    if cfg is None:
        return LMObjective(chunk)
    if recipe.method == "distill":
        from ayar.train.distill import DistillObjective

        return DistillObjective(teacher, cfg.temperature, cfg.kl_weight, cfg.sft_weight)
    params = cfg.model_dump()
    if recipe.method == "kto":
        return KtoObjective(params, reference, chunk)
    losses = PAIR_LOSSES[recipe.method]
    spec = losses[params.pop("loss")] if "loss" in params else next(iter(losses.values()))
    nll = params.pop(spec.nll_weight_field) if spec.nll_weight_field else 0.0
    return PairObjective(spec, params, nll, reference if spec.needs_reference else None, chunk)
