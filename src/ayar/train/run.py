"""A training run from a recipe: load, tokenise, adapt, fit, save.

The stage reads top to bottom: tokenizer -> examples -> model -> adapter ->
loop -> save. Outputs in ``output_dir``:

- ``adapter/`` (PEFT format, safetensors) or ``model/`` for full fine-tuning,
  each with the tokenizer and its chat template;
- ``checkpoints/step-N/`` (exact-resume state, see :mod:`ayar.train.checkpoint`);
- ``metrics.jsonl`` (one line per logged step), ``recipe.yaml`` (resolved),
  ``summary.json`` (counts, final losses, timings).

A run folder that holds a complete checkpoint is resumed automatically when the
recipe is unchanged; a changed recipe is refused with the list of changes.
"""

from __future__ import annotations

import json
import shutil
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from ayar.errors import AyarError
from ayar.fsutil import atomic_write, check_distinct, os_error_advice, replace_folder
from ayar.model.run_folder import adapter_folder
from ayar.recipe import Recipe, check_recipe_files
from ayar.train.batching import pack, padding_fraction
from ayar.train.checkpoint import complete_checkpoints
from ayar.train.loop import (
    Checkpointing,
    FitResult,
    MetricsWriter,
    OutOfMemory,
    StopRequest,
    autocast_dtype,
    fit,
)
from ayar.train.methods import METHODS
from ayar.train.objectives import files_digest, make_objective, precompute_reference
from ayar.train.reference import make_reference, reference_kind, start_model
from ayar.train.teacher import prepare_teacher
from ayar.ui import console, step_progress

# Recipe keys that may change between a checkpoint and its resume: they do not affect the numbers.
RESUME_MAY_CHANGE = {"train.log_every", "train.save_every", "train.keep_checkpoints"}


class Interrupted(AyarError):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint."""

    exit_code = 130


@dataclass
class TrainedRun:
    """What a training run leaves in memory: the fit result and the trained model."""

    result: FitResult
    model: torch.nn.Module
    tokenizer: object
    output_dir: Path


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def recipe_changes(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two resolved recipes (``key: old -> new``)."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in RESUME_MAY_CHANGE and a.get(k) != b.get(k)]


RUN_OUTPUTS = ("adapter", "model", "checkpoints", "metrics.jsonl", "summary.json", "recipe.yaml", "manifest.json")


def check_run_paths(recipe: Recipe) -> None:
    """Refuse an output_dir whose files (replaced or deleted by a run) would be the data or model it reads.

    Raises:
        AyarError: e.g. ``data.train`` inside ``output_dir/adapter``, or ``model.path`` equal to ``output_dir/model``.
    """
    out = Path(recipe.output_dir)
    m, d = recipe.model, recipe.data
    inputs = {"data.train": d.train, "data.val": d.val, "model.init_adapter": m.init_adapter,
              "model.path": m.path if Path(m.path).expanduser().exists() else None}
    check_distinct(inputs, {f"output_dir {out / name}": out / name for name in RUN_OUTPUTS})


def plan_resume(recipe: Recipe, *, resume: bool, overwrite: bool) -> Path | None:
    """Decide whether this run continues from a checkpoint, and which.

    Raises:
        AyarError: a finished run without ``overwrite``; ``resume`` without a checkpoint;
            or a recipe that changed since the checkpoint (the changes are listed).
    """
    out = Path(recipe.output_dir)
    if overwrite:
        for name in ("checkpoints", "adapter", "model"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("metrics.jsonl", "summary.json"):
            (out / name).unlink(missing_ok=True)
        return None
    if (out / "summary.json").exists():
        raise AyarError(f"{out} already holds a finished run; choose another output_dir or pass --overwrite")
    complete = complete_checkpoints(out / "checkpoints")
    if not complete:
        if resume:
            raise AyarError(f"--resume: {out / 'checkpoints'} holds no complete checkpoint to resume from")
        return None
    latest = complete[-1]
    saved = yaml.safe_load((latest / "recipe.yaml").read_text(encoding="utf-8"))
    changes = recipe_changes(saved, recipe.model_dump(mode="json"))
    if changes:
        listed = "\n  ".join(changes)
        raise AyarError(f"{out} holds a checkpoint ({latest.name}) of a different recipe:\n  {listed}\n"
                        "restore those values to resume, use another output_dir, or pass --overwrite to start over")
    return latest


@contextmanager
def stop_on_signals():
    """SIGINT / SIGTERM set a flag instead of killing: the loop checkpoints and stops cleanly."""
    request = StopRequest()
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_packing(model, pad_id: int) -> None:
    """Refuse packing when the model's attention does not keep packed examples apart.

    Two short sequences are run packed in one row (position ids restarting) and
    alone; their logits must agree.
    """
    from ayar.train.batching import PackedExample, collate
    from ayar.train.losses import IGNORE

    a, b = [5, 6, 7, 8, 9], [10, 11, 12]
    row = collate([PackedExample(a + b, [IGNORE] * 8, list(range(5)) + list(range(3)))], pad_id)
    with torch.no_grad():
        device = next(model.parameters()).device
        packed = model(input_ids=row["input_ids"].to(device), position_ids=row["position_ids"].to(device)).logits
        alone = model(input_ids=torch.tensor([b], device=device)).logits
    if not torch.allclose(packed[0, 5:].float(), alone[0].float(), atol=1e-2, rtol=1e-2):
        raise AyarError(f"data.packing: {type(model).__name__} attends across packed examples with this attention "
                        "backend (it does not honour position-id restarts); set data.packing: false and use "
                        "train.group_by_length: true to limit padding instead")


def _save_atomically(out: Path, name: str, save) -> Path:
    """Call ``save(tmp_dir)``, fsync it, then rename it to ``out/name``: a crash never leaves a half-written folder."""
    final, tmp = out / name, out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    replace_folder(tmp, final)
    return final


def _oom_advice(exc: OutOfMemory, recipe: Recipe) -> AyarError:
    t = recipe.train
    return AyarError(
        f"{exc}. In use: train.micro_batch_size={t.micro_batch_size}, data.max_length={recipe.data.max_length}, "
        f"train.gradient_checkpointing={str(t.gradient_checkpointing).lower()}, adapter.type={recipe.adapter.type}, "
        f"model.dtype={recipe.model.dtype}. Try: train.micro_batch_size={max(1, t.micro_batch_size // 2)} with "
        f"train.gradient_accumulation_steps={t.gradient_accumulation_steps * 2} (same effective batch), "
        "train.gradient_checkpointing=true, a LoRA adapter instead of full fine-tuning, 4-bit QLoRA, "
        "or a shorter data.max_length."
    )


def train_from_recipe(recipe: Recipe, *, overwrite: bool = False, resume: bool = False,
                      force: bool = False) -> TrainedRun:
    """Run the recipe's training stage and write its outputs.

    Before the weights load, the plan's estimate (:mod:`ayar.plan`) must fit the
    device's free memory (``force`` skips that check); peak memory, tokens/s and
    achieved MFU go into ``summary.json`` under ``measured``.

    Raises:
        AyarError: bad data, a model that cannot be loaded, an output folder that
            already holds a finished run, a changed recipe on resume, divergence,
            out of memory, an interruption (after checkpointing), or an operating-system
            error such as a full disk (one line saying what to free).
    """
    try:
        return _train(recipe, overwrite=overwrite, resume=resume, force=force)
    except OSError as exc:
        if exc.errno is None:  # not the operating system's (e.g. a model that cannot be found): as it was
            raise
        out = Path(recipe.output_dir)
        raise AyarError(os_error_advice(
            exc, out, during="training", free_hint=f"old runs, or checkpoints under {out / 'checkpoints'}: "
            "train.keep_checkpoints keeps fewer; the run resumes from its last complete checkpoint")) from None


def _train(recipe: Recipe, *, overwrite: bool, resume: bool, force: bool) -> TrainedRun:
    from accelerate import Accelerator

    from ayar.govern.manifest import MANIFEST_NAME, build_manifest, utc_now, write_json_atomic
    from ayar.govern.record import record_interrupted, record_train
    from ayar.model.adapters import attach_adapter, count_parameters
    from ayar.model.load import load_model, load_tokenizer, resolve_dtype
    from ayar.plan.measure import PeakMemory, StepClock, measured
    from ayar.plan.report import preflight
    from ayar.train.tracking import start_tracking

    check_recipe_files(recipe)  # `ayar check` reports these too; a recipe built in code meets them here
    started = utc_now()
    out = Path(recipe.output_dir)
    check_run_paths(recipe)
    resume_from = plan_resume(recipe, resume=resume, overwrite=overwrite)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    amp = autocast_dtype(recipe.train.precision, accelerator.device)
    peak = PeakMemory(accelerator.device.type).start()

    m = recipe.model
    tokenizer = load_tokenizer(m.path, chat_template=m.chat_template, revision=m.revision,
                               trust_remote_code=m.trust_remote_code)
    method = METHODS[recipe.method]
    train_examples, stats = method.build_examples(recipe.data.train, tokenizer, recipe)
    val_examples = method.build_examples(recipe.data.val, tokenizer, recipe)[0] if recipe.data.val else []
    if not train_examples:
        raise AyarError(f"{recipe.data.train}: no usable training examples ({stats})")

    preflight(recipe, tokenizer, train_examples, accelerator.device, force=force,
              say=lambda msg: console.print(msg, markup=False) if accelerator.is_main_process else None)
    full = recipe.adapter.type == "full"
    dtype = resolve_dtype(m.dtype, accelerator.device, full_finetune=full, autocast=amp)
    model = load_model(m.path, dtype=dtype, revision=m.revision, trust_remote_code=m.trust_remote_code,
                       device=accelerator.device, quantization=m.quantization)
    if recipe.data.packing and method.name == "sft":
        check_packing(model, tokenizer.pad_token_id)
        train_examples = pack(train_examples, recipe.data.max_length)
    if recipe.train.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model, attached = start_model(model, recipe)
    torch.manual_seed(recipe.train.seed)  # adapter initialisation
    if not attached:
        model = attach_adapter(model, recipe.adapter, tokenizer)
    reference, reference_note = None, ""
    if method.reference:
        kind = reference_kind(recipe)
        reference = make_reference(kind, model, recipe, accelerator.device)
        if kind == "precompute":
            path, hit = precompute_reference(
                make_objective(recipe, reference), model, [train_examples, val_examples],
                pad_id=tokenizer.pad_token_id, batch_size=recipe.train.micro_batch_size, amp=amp,
                device=accelerator.device, folder=recipe.preference.cache_dir, key_parts=_reference_key(recipe, amp, dtype))
            reference_note = f"; reference log-probs {'read from' if hit else 'precomputed into'} {path}"
            reference = None  # training runs no reference forward
        else:
            reference_note = f"; reference: {kind.replace('_', ' ')}"
    teacher = None
    if method.teacher:  # distill: the teacher loaded, or its top-k precomputed into the examples and it freed
        teacher, (train_examples, val_examples), reference_note = prepare_teacher(
            recipe, model, tokenizer, [train_examples, val_examples], accelerator.device, amp)
    objective = make_objective(recipe, reference, teacher)
    trainable, total = count_parameters(model)
    world = accelerator.num_processes
    lengths = [len(e.input_ids) for e in train_examples] if recipe.train.group_by_length else None
    padding = padding_fraction(train_examples, recipe.train.micro_batch_size * world, recipe.train.seed, lengths,
                               batches=min(200, -(-len(train_examples) // (recipe.train.micro_batch_size * world))))

    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        _trim_metrics(out / "metrics.jsonl", resume_from)
        packed = f" packed into {len(train_examples)} rows" if recipe.data.packing else ""
        console.print(
            f"{method.name} on {stats.examples} examples{packed} ({stats.target_tokens} target tokens"
            f"{f', {stats.truncated} truncated' if stats.truncated else ''}"
            f"{f', {stats.dropped_no_target} dropped with no target left' if stats.dropped_no_target else ''}"
            f"{''.join(f', {n} dropped: {why}' for why, n in getattr(stats, 'dropped', {}).items())}; "
            f"padding {padding:.1%}); {recipe.adapter.type}: {trainable:,} of {total:,} parameters trainable; "
            f"weights {str(dtype).removeprefix('torch.')}, autocast {str(amp).removeprefix('torch.') if amp else 'off'}"
            + reference_note + (f"; resuming from {resume_from.name}" if resume_from else ""), markup=False)
    checkpointing = Checkpointing(out / "checkpoints", recipe.train.save_every, recipe.train.keep_checkpoints,
                                  recipe.to_yaml(), resume_from)
    writer = MetricsWriter(out / "metrics.jsonl") if main else None
    tracker = start_tracking(accelerator, recipe.train.tracking, out, run_name=out.name,
                             params=recipe.model_dump(mode="json"))

    def log(record: dict) -> None:
        writer(record)
        tracker.log(record, step=record["step"])

    with tracker, step_progress(method.name) as update, stop_on_signals() as stop:
        clock = StepClock(update)
        try:
            result = fit(model, train_examples, recipe.train, pad_id=tokenizer.pad_token_id,
                         val_examples=val_examples, accelerator=accelerator, log=log if main else None,
                         progress=clock, checkpointing=checkpointing, stop=stop, objective=objective,
                         warn=lambda msg: console.print(f"warning: {msg}", style="yellow", markup=False))
        except OutOfMemory as exc:
            raise _oom_advice(exc, recipe) from None
        if result.stop_reason == "signal":
            if main:
                record_interrupted(recipe, result.steps)
            raise Interrupted(f"interrupted at step {result.steps}; checkpoint saved in {out / 'checkpoints'}. "
                              "Resume with `ayar train RECIPE` (or --resume): it continues exactly where it stopped")
        whole = _whole_weights(model, full, keep=main)  # under FSDP every process takes part
        if main:
            _save_outputs(out, model, tokenizer, full, whole)
            summary = {"method": method.name, "adapter": recipe.adapter.type, "trainable_parameters": trainable,
                       "total_parameters": total, "data": vars(stats), "val_examples": len(val_examples),
                       "padding_fraction": padding,
                       **{k: v for k, v in result.to_dict().items() if k != "history"},
                       "measured": measured(recipe, train_examples, result, peak.read(), accelerator.device, clock)}
            write_json_atomic(out / "summary.json", summary)
            manifest = build_manifest(
                recipe=recipe.model_dump(mode="json"), data_files=[recipe.data.train, recipe.data.val],
                base_model=m.path, base_model_revision=m.revision, output_dir=out, seed=recipe.train.seed,
                started=started, ended=utc_now(), exclude_outputs=["checkpoints/*"],
                metrics={"final_loss": result.final_loss, "eval_loss": result.eval_loss, "steps": result.steps,
                         "skipped_steps": result.skipped_steps, "best_eval_loss": result.best_eval_loss})
            write_json_atomic(out / MANIFEST_NAME, manifest)
            record_train(recipe, out, manifest, resumed_from=resume_from and resume_from.name,
                         manifest_path=out / MANIFEST_NAME)
            tracker.log_artifact(out / "recipe.yaml")
            tracker.log_artifact(out / MANIFEST_NAME)
            console.print(f"done: {result.steps} steps, loss {result.final_loss:.4f}"
                          f"{f', eval loss {result.eval_loss:.4f}' if result.eval_loss is not None else ''}"
                          f"{' (early stopping)' if result.stop_reason == 'early_stopping' else ''}; saved to {out}"
                          + (f"; see the run: {tracker.view_command}" if tracker.view_command else ""),
                          markup=False)
    accelerator.wait_for_everyone()
    return TrainedRun(result, model, tokenizer, out)


def _reference_key(recipe: Recipe, amp, dtype) -> dict:
    """What the precomputed reference log-probs depend on, besides the examples' token ids.

    A hub id is keyed by its name and ``model.revision``: pin a commit there for a
    cache that cannot outlive a changed upstream model.
    """
    m = recipe.model
    continuing = bool(m.init_adapter) and m.init_adapter_mode == "continue"
    return {"model": files_digest(m.path), "revision": m.revision, "dtype": str(dtype), "quantization": m.quantization,
            "init_adapter": files_digest(adapter_folder(m.init_adapter)) if m.init_adapter else None,
            "init_adapter_mode": m.init_adapter_mode, "adapter": recipe.adapter.type if continuing else None,
            "autocast": str(amp), "method": recipe.method}


def _trim_metrics(path: Path, resume_from: Path | None) -> None:
    """Start metrics.jsonl afresh, or keep only the lines up to the step being resumed from.

    The file is rewritten atomically (a crash now leaves the old or the new one); a line a
    crash tore in two (the last one, being written) is dropped, not fatal.
    """
    if resume_from is None or not path.exists():
        path.unlink(missing_ok=True)
        return
    step = int(resume_from.name.split("-")[1])
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # torn by a crash mid-write
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
    with atomic_write(path) as fh:
        fh.writelines(f"{line}\n" for line in kept)


def _whole_weights(model, full: bool, keep: bool) -> dict[str, torch.Tensor] | None:
    """The weights to save, gathered whole from a model sharded by FSDP (None: not sharded, or not ``keep``).

    Full fine-tuning gathers the whole state dict (tied weights stay one tensor); an
    adapter only its trainable parameters, which is all PEFT saves.
    """
    from ayar.train.checkpoint import trainable_state
    from ayar.train.sharding import full_tensors, is_sharded

    if not is_sharded(model):
        return None
    return full_tensors(model.state_dict(keep_vars=True) if full else trainable_state(model), keep=keep)


def _save_outputs(out: Path, model, tokenizer, full: bool, weights: dict[str, torch.Tensor] | None = None) -> None:
    def save(folder: Path) -> None:
        # weights: gathered from FSDP shards; None: the model's own state dict (both libraries' default)
        model.save_pretrained(folder, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(folder)

    _save_atomically(out, "model" if full else "adapter", save)
