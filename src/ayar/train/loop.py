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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ayar.chat.tokenize import EncodedExample
from ayar.errors import AyarError
from ayar.train.losses import IGNORE, TargetLoss, count_targets


def collate(examples: Sequence[EncodedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into ``input_ids``, ``attention_mask``, ``labels`` (batch, seq)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, ex in enumerate(examples):
        n = len(ex.input_ids)
        ids[row, :n] = torch.tensor(ex.input_ids)
        labels[row, :n] = torch.tensor(ex.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def micro_batches(n_examples: int, batch_size: int, seed: int, shuffle: bool = True) -> Iterator[list[int]]:
    """Endless stream of index lists, reshuffled each epoch from ``seed + epoch``.

    The order depends only on the seed and the position in the stream, which is
    what makes a run reproducible (and resumable from a position).
    """
    epoch = 0
    while True:
        if shuffle:
            order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        else:
            order = list(range(n_examples))
        for start in range(0, n_examples, batch_size):
            yield order[start : start + batch_size]
        epoch += 1


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


def total_steps(n_examples: int, cfg) -> int:
    """Optimizer steps the run will take: ``max_steps``, or ``epochs`` worth of steps."""
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = math.ceil(n_examples / (cfg.micro_batch_size * cfg.gradient_accumulation_steps))
    return max(1, math.ceil(cfg.epochs * per_epoch))


@dataclass
class FitResult:
    steps: int
    final_loss: float
    eval_loss: float | None
    tokens: int
    target_tokens: int
    seconds: float
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; matrices decay, biases and norms do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.learning_rate, betas=cfg.adam_betas)


def make_scheduler(optimizer, cfg, steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * steps), num_training_steps=steps)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def evaluate(loss_model: TargetLoss, examples: Sequence[EncodedExample], pad_id: int, batch_size: int,
             accelerator, amp: torch.dtype | None = None) -> float:
    """Mean token loss over ``examples`` (summed loss over summed target count)."""
    was_training = loss_model.training
    loss_model.eval()
    total, count = torch.zeros((), device=accelerator.device), torch.zeros((), device=accelerator.device)
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(accelerator.device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
        with _autocast(accelerator.device, amp):
            loss_sum, n = loss_model(**batch)
        total += loss_sum.float()
        count += n
    loss_model.train(was_training)
    return float(total / count.clamp(min=1))


def fit(
    model: torch.nn.Module,
    train_examples: Sequence[EncodedExample],
    cfg,
    *,
    pad_id: int,
    val_examples: Sequence[EncodedExample] = (),
    accelerator=None,
    log: Callable[[dict], None] | None = None,
    progress=None,
) -> FitResult:
    """Train ``model`` in place on ``train_examples`` with the recipe's ``train`` section.

    Args:
        model: a causal LM (peft-wrapped or not) whose trainable parameters require grad.
        train_examples: tokenised examples with labels (IGNORE where no loss).
        cfg: :class:`ayar.recipe.TrainSection`.
        pad_id: padding token id (masked out of attention and loss).
        val_examples: evaluated every ``cfg.eval_every`` steps and at the end.
        accelerator: an ``accelerate.Accelerator``; one is made when None.
        log: called with each metrics record (step metrics and eval results).
        progress: optional callable ``(step, total, record)`` for a progress display.

    Returns:
        The step count, last training loss, last eval loss, token counts and history.
    """
    from accelerate import Accelerator

    # Mixed precision is ours (torch.autocast from the recipe), not accelerate's process-wide setting.
    accelerator = accelerator or Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    amp = autocast_dtype(cfg.precision, accelerator.device)
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
    torch.manual_seed(cfg.seed)
    steps = total_steps(len(train_examples), cfg)
    loss_model = TargetLoss(model)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    loss_model, optimizer = accelerator.prepare(loss_model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    # Each process reads its own slice of every global micro-batch.
    rank, world = accelerator.process_index, accelerator.num_processes
    stream = micro_batches(len(train_examples), cfg.micro_batch_size * world, cfg.seed)
    loss_model.train()
    history: list[dict] = []
    tokens = target_tokens = 0
    last_loss, eval_loss = float("nan"), None
    start = time.perf_counter()
    for step in range(1, steps + 1):
        batches = []
        for _ in range(cfg.gradient_accumulation_steps):
            indices = next(stream)
            share = indices[rank::world]
            batch = collate([train_examples[i] for i in share or indices[:1]], pad_id)
            if not share:  # a short last batch left this process nothing: run it, but learn nothing
                batch["labels"].fill_(IGNORE)
            batches.append(batch)
        n_local = torch.tensor(float(sum(count_targets(b["labels"]) for b in batches)), device=accelerator.device)
        n_global = accelerator.reduce(n_local, reduction="sum")
        # DDP averages gradients over processes; multiply back so the result is sum / n_global.
        scale = world / n_global.clamp(min=1)
        step_loss = torch.zeros((), device=accelerator.device)
        for i, batch in enumerate(batches):
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            sync = i == len(batches) - 1
            with (contextlib.nullcontext() if sync else accelerator.no_sync(loss_model)):
                with _autocast(accelerator.device, amp):
                    loss_sum, _ = loss_model(**batch)
                    loss = loss_sum * scale
                accelerator.backward(scaler.scale(loss) if scaler else loss)
            step_loss += loss_sum.detach().float()
            tokens += int(batch["attention_mask"].sum())
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
        if scaler:
            scaler.unscale_(optimizer)
        grad_norm = accelerator.clip_grad_norm_(params, max_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        target_tokens += int(n_local)
        last_loss = float(accelerator.reduce(step_loss, reduction="sum") / n_global.clamp(min=1))
        record = {
            "step": step,
            "loss": last_loss,
            "lr": scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm),
            "target_tokens": target_tokens,
            "tokens_per_s": tokens / max(time.perf_counter() - start, 1e-9),
            "elapsed_s": time.perf_counter() - start,
        }
        if val_examples and ((cfg.eval_every and step % cfg.eval_every == 0) or step == steps):
            eval_loss = evaluate(loss_model, val_examples, pad_id, cfg.micro_batch_size, accelerator, amp)
            record["eval_loss"] = eval_loss
        history.append(record)
        if log and (step % cfg.log_every == 0 or step == steps or "eval_loss" in record):
            log(record)
        if progress:
            progress(step, steps, record)
    return FitResult(steps, last_loss, eval_loss, tokens, target_tokens, time.perf_counter() - start, history)


class MetricsWriter:
    """Appends one JSON line per record to ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
