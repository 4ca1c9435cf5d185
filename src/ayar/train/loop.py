"""ayar's training loop, on accelerate.

One optimizer step reads ``gradient_accumulation_steps`` micro-batches. Each
micro-batch contributes its *summed* token loss divided by the number of target
tokens in the whole step (counted across processes), so accumulation gives the
same gradient as one large batch — not a mean of per-micro-batch means.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ayar.errors import AyarError
from ayar.train.batching import micro_batches
from ayar.train.checkpoint import (
    LoopState,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    trainable_state,
)
from ayar.train.losses import count_targets
from ayar.train.objectives import Batch, LMObjective, Objective
from ayar.train.sharding import full_tensors, no_sync, shard

if TYPE_CHECKING:
    from accelerate import Accelerator

    from ayar.recipe import TrainSection


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on ``device`` (None: full fp32).

    Raises:
        AyarError: a precision the device cannot run.
    """
    from ayar.model.load import bf16_supported

    if precision == "auto":
        return torch.bfloat16 if bf16_supported(device) else None
    if precision == "fp16" and device.type != "cuda":
        raise AyarError("train.precision: fp16 needs a CUDA GPU; use bf16 or fp32 on this machine")
    if precision == "bf16" and not bf16_supported(device):
        raise AyarError(f"train.precision: this {device.type} device has no bf16 support; use fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


def total_steps(n_examples: int, cfg: TrainSection) -> int:
    """Optimizer steps the run will take: ``max_steps``, or ``epochs`` worth of steps."""
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = math.ceil(n_examples / (cfg.micro_batch_size * cfg.gradient_accumulation_steps))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def make_optimizer(model: torch.nn.Module, cfg: TrainSection) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; matrices decay, biases and norms do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, betas=cfg.adam_betas)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainSection, steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * steps), num_training_steps=steps)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _reduce(accelerator: Accelerator, values: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor]:
    """Sum each value over processes (keys in the same order everywhere)."""
    if not values:
        return {}
    keys = sorted(values)
    stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float64, device=accelerator.device).reshape(())
                           for k in keys])
    return dict(zip(keys, accelerator.reduce(stacked, reduction="sum"), strict=True))


def _add(total: dict, key: str, value) -> None:
    total[key] = total.get(key, 0) + (value.detach().double() if torch.is_tensor(value) else value)


def _stats_record(sums: dict, counts: dict) -> dict[str, float]:
    return {k: float(sums[k] / counts[k]) for k in sums if float(counts[k]) > 0}


@torch.no_grad()
def evaluate(loss_model: torch.nn.Module, examples: Sequence, pad_id: int, batch_size: int,
             accelerator: Accelerator, amp: torch.dtype | None = None,
             objective: Objective | None = None) -> tuple[float, dict[str, float]]:
    """Loss over ``examples`` (each term's sum over its count) and the objective's statistics."""
    objective = objective or LMObjective()
    was_training = loss_model.training
    loss_model.eval()
    terms_total, counts_total, stat_sums, stat_counts = {}, {}, {}, {}
    for start in range(0, len(examples), batch_size):
        batch = objective.collate(examples[start : start + batch_size], pad_id)
        for k, v in objective.counts(batch).items():
            _add(counts_total, k, v)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        with _autocast(accelerator.device, amp):
            terms, stats = loss_model(**batch)
        for k, v in terms.items():
            _add(terms_total, k, v)
        for k, (total, count) in stats.items():
            _add(stat_sums, k, total)
            _add(stat_counts, k, count)
    loss_model.train(was_training)
    terms_total, counts_total = _reduce(accelerator, terms_total), _reduce(accelerator, counts_total)
    loss = sum(float(terms_total[k] / counts_total[k].clamp(min=1)) for k in terms_total)
    return loss, _stats_record(_reduce(accelerator, stat_sums), _reduce(accelerator, stat_counts))


@dataclass
class FitResult:
    steps: int
    final_loss: float
    eval_loss: float | None
    tokens: int
    target_tokens: int
    seconds: float
    skipped_steps: int = 0
    best_eval_loss: float | None = None
    best_step: int | None = None
    stop_reason: str | None = None  # None: ran to the end; "early_stopping"; "signal"
    resumed_from: int | None = None
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Checkpointing:
    """Where and how often ``fit`` writes checkpoints, and one to resume from."""

    root: Path
    every: int | None
    keep_last: int
    recipe_yaml: str
    resume_from: Path | None = None


class StopRequest:
    """A signal handler: the loop finishes the current step, checkpoints and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum, frame) -> None:
        self.signal = signum


class OutOfMemory(AyarError):
    """The device ran out of memory; the message gives the sizes that were in use."""


class Diverged(AyarError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))


def _read_step(stream, train_examples: Sequence, cfg: TrainSection, rank: int, world: int, pad_id: int,
               objective: Objective) -> list[Batch]:
    """The micro-batches of one optimizer step, this process's share of each."""
    batches = []
    for _ in range(cfg.gradient_accumulation_steps):
        indices = next(stream)
        share = indices[rank::world]
        batch = objective.collate([train_examples[i] for i in share or indices[:1]], pad_id)
        if not share:  # a short last batch left this process nothing: run it, but learn nothing
            objective.silence(batch)
        batches.append(batch)
    return batches


@dataclass
class StepResult:
    loss: torch.Tensor
    tokens: int
    target_tokens: int  # this process's tokens with a loss
    stats: dict[str, float]


def _accumulate(loss_model: torch.nn.Module, batches: list[Batch], accelerator: Accelerator,
                amp: torch.dtype | None, scaler, objective: Objective) -> StepResult:
    """Forward and backward over one step's micro-batches.

    Each loss term is divided by its count over the whole step and all
    processes (not per micro-batch), so accumulation equals one large batch.
    """
    counts_local: dict[str, float] = {}
    for batch in batches:
        for k, v in objective.counts(batch).items():
            counts_local[k] = counts_local.get(k, 0.0) + v
    n_global = {k: v.clamp(min=1) for k, v in _reduce(accelerator, counts_local).items()}
    # DDP and FSDP average gradients over processes; multiply back so each term is sum / n_global.
    world = accelerator.num_processes
    terms_total, stat_sums, stat_counts = {}, {}, {}
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())
                 for b in batches)
    target_tokens = sum(count_targets(b["labels"]) for b in batches)
    for i, batch in enumerate(batches):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        sync = i == len(batches) - 1
        with contextlib.nullcontext() if sync else no_sync(loss_model, accelerator):
            with _autocast(accelerator.device, amp):
                terms, stats = loss_model(**batch)
            loss = sum(term * (world / n_global[k]).to(term.dtype) for k, term in terms.items())
            accelerator.backward(scaler.scale(loss) if scaler else loss)
        for k, v in terms.items():
            _add(terms_total, k, v)
        for k, (total, count) in stats.items():
            _add(stat_sums, k, total)
            _add(stat_counts, k, count)
    terms_total = _reduce(accelerator, terms_total)
    loss = sum(terms_total[k] / n_global[k] for k in terms_total)
    stats = _stats_record(_reduce(accelerator, stat_sums), _reduce(accelerator, stat_counts))
    return StepResult(loss, tokens, target_tokens, stats)


def _apply_update(optimizer: torch.optim.Optimizer, scheduler, scaler, params, cfg: TrainSection,
                  accelerator: Accelerator, loss: float, state: LoopState) -> float:
    """Clip and apply the accumulated gradient, or skip it when loss or norm is not finite."""
    if scaler:
        scaler.unscale_(optimizer)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
    grad_norm = float(accelerator.clip_grad_norm_(params, max_norm))
    finite = math.isfinite(loss) and (math.isfinite(grad_norm) or scaler is not None)
    if finite:
        if scaler:
            scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        state.bad_steps = 0
    else:
        state.bad_steps += 1
        state.skipped_steps += 1
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def fit(
    model: torch.nn.Module,
    train_examples: Sequence,
    cfg: TrainSection,
    *,
    pad_id: int,
    val_examples: Sequence = (),
    accelerator: Accelerator | None = None,
    log: Callable[[dict], None] | None = None,
    progress=None,
    warn: Callable[[str], None] | None = None,
    checkpointing: Checkpointing | None = None,
    stop: StopRequest | None = None,
    objective: Objective | None = None,
) -> FitResult:
    """Train ``model`` in place on ``train_examples`` with the recipe's ``train`` section.

    With several processes, ``cfg.distributed == "fsdp"`` shards ``model`` in place
    (:mod:`ayar.train.sharding`): afterwards its parameters are this process's shards.

    Args:
        model: a causal LM (peft-wrapped or not) whose trainable parameters require grad.
        train_examples: tokenised examples with labels (IGNORE where no loss), or packed rows.
        cfg: :class:`ayar.recipe.TrainSection`.
        pad_id: padding token id (masked out of attention and loss).
        val_examples: evaluated every ``cfg.eval_every`` steps and at the end.
        accelerator: an ``accelerate.Accelerator``; one is made when None.
        log: called with each metrics record on the main process.
        progress: optional callable ``(step, total, record)`` for a progress display.
        warn: called with warnings (skipped non-finite steps, early stopping).
        checkpointing: where to write checkpoints, and one to resume from.
        stop: set by a signal handler to checkpoint and stop after the current step.
        objective: how examples become batches and losses (:mod:`ayar.train.objectives`);
            next-token cross-entropy when None.

    Returns:
        Step count, losses, token counts, history and why the run stopped.

    Raises:
        Diverged: ``cfg.max_bad_steps`` consecutive non-finite steps.
        OutOfMemory: the device ran out of memory (with the batch shape in use).
    """
    from accelerate import Accelerator

    # Mixed precision is ours (torch.autocast from the recipe), not accelerate's process-wide setting.
    accelerator = accelerator or Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    amp = autocast_dtype(cfg.precision, accelerator.device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    warn = warn or (lambda message: None)
    torch.manual_seed(cfg.seed)
    steps = total_steps(len(train_examples), cfg)
    objective = objective or LMObjective(cfg.loss_chunk_size)
    loss_model = objective.wrap(model)
    sharded = cfg.distributed == "fsdp" and accelerator.num_processes > 1
    if sharded:  # before the optimizer: the parameters become shards
        shard(loss_model, model, accelerator)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    if not sharded:
        loss_model, optimizer = accelerator.prepare(loss_model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    state = LoopState()
    resumed_from = None
    if checkpointing and checkpointing.resume_from:
        state = load_checkpoint(checkpointing.resume_from, model=model, optimizer=optimizer, scheduler=scheduler)
        resumed_from = state.step
    rank, world = accelerator.process_index, accelerator.num_processes
    lengths = [len(e.input_ids) for e in train_examples] if cfg.group_by_length else None
    stream = micro_batches(len(train_examples), cfg.micro_batch_size * world, cfg.seed, lengths, state.consumed)
    loss_model.train()
    stop_reason = None
    started = time.perf_counter() - state.elapsed_s
    eval_loss = state.history[-1].get("eval_loss") if state.history else None

    def save() -> None:
        if checkpointing:
            main = accelerator.is_main_process
            # Under FSDP every process takes part in gathering the state; the main process writes it.
            weights = full_tensors(trainable_state(model), keep=main)
            optimizer_state = full_tensors(optimizer.state_dict(), keep=main)
            if main:
                state.elapsed_s = time.perf_counter() - started
                save_checkpoint(checkpointing.root, weights=weights, optimizer_state=optimizer_state,
                                scheduler=scheduler, loop=state, recipe_yaml=checkpointing.recipe_yaml)
                prune_checkpoints(checkpointing.root, checkpointing.keep_last, state.best_step)
        accelerator.wait_for_everyone()

    while state.step < steps:
        batches = _read_step(stream, train_examples, cfg, rank, world, pad_id, objective)
        try:
            step = _accumulate(loss_model, batches, accelerator, amp, scaler, objective)
        except Exception as exc:
            if _is_oom(exc):
                shape = max(tuple(b["input_ids"].shape) for b in batches)
                raise OutOfMemory(f"out of memory at step {state.step + 1} with a micro-batch of shape {shape} "
                                  "(examples x tokens)") from None
            raise
        state.step += 1
        state.consumed += cfg.gradient_accumulation_steps
        loss = float(step.loss)
        grad_norm = _apply_update(optimizer, scheduler, scaler, params, cfg, accelerator, loss, state)
        state.tokens += step.tokens
        state.target_tokens += step.target_tokens
        elapsed = time.perf_counter() - started
        record = {"step": state.step, "loss": loss, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm,
                  "target_tokens": state.target_tokens, "tokens_per_s": state.tokens / max(elapsed, 1e-9),
                  "elapsed_s": elapsed, **step.stats}
        if state.bad_steps:
            record["skipped"] = True
            warn(f"step {state.step}: loss {loss} / gradient norm {grad_norm} is not finite; update skipped "
                 f"({state.bad_steps} in a row, limit {cfg.max_bad_steps})")
            if state.bad_steps >= cfg.max_bad_steps:
                raise Diverged(f"training diverged: {state.bad_steps} consecutive steps with a non-finite loss or "
                               f"gradient norm (up to step {state.step}); the last good checkpoint is kept. Lower "
                               "train.learning_rate, keep train.max_grad_norm set, or check the data.")
        improved = False
        if val_examples and ((cfg.eval_every and state.step % cfg.eval_every == 0) or state.step == steps):
            eval_loss, eval_stats = evaluate(loss_model, val_examples, pad_id, cfg.micro_batch_size, accelerator,
                                             amp, objective)
            record["eval_loss"] = eval_loss
            record.update({f"eval_{k}": v for k, v in eval_stats.items()})
            best = state.best_eval_loss
            improved = best is None or eval_loss < best - cfg.early_stopping_min_delta
            if improved:
                state.best_eval_loss, state.best_step, state.evals_without_improvement = eval_loss, state.step, 0
            else:
                state.evals_without_improvement += 1
            patience = cfg.early_stopping_patience
            if patience and state.evals_without_improvement >= patience:
                stop_reason = "early_stopping"
                warn(f"early stopping at step {state.step}: no eval-loss improvement > "
                     f"{cfg.early_stopping_min_delta} in {patience} evaluations (best {state.best_eval_loss:.4f} "
                     f"at step {state.best_step})")
        state.history.append(record)
        if log and accelerator.is_main_process and (
                state.step % cfg.log_every == 0 or state.step == steps or "eval_loss" in record or state.bad_steps):
            log(record)
        if progress and accelerator.is_main_process:
            progress(state.step, steps, record)
        if stop is not None and stop.signal is not None:
            stop_reason = "signal"
        every = checkpointing.every if checkpointing else None
        if checkpointing and (improved or stop_reason or state.step == steps or (every and state.step % every == 0)):
            save()
        if stop_reason:
            break
    state.elapsed_s = time.perf_counter() - started
    last_loss = next((r["loss"] for r in reversed(state.history) if not r.get("skipped")), float("nan"))
    return FitResult(state.step, last_loss, eval_loss, state.tokens, state.target_tokens, state.elapsed_s,
                     state.skipped_steps, state.best_eval_loss, state.best_step, stop_reason, resumed_from,
                     state.history)


class MetricsWriter:
    """Appends one JSON line per record to ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
