"""A training run from a recipe: load, tokenise, adapt, fit, save.

The stage reads top to bottom: tokenizer -> examples -> model -> adapter ->
loop -> save. Outputs in ``output_dir``:

- ``adapter/`` (PEFT format, safetensors) or ``model/`` for full fine-tuning,
  each with the tokenizer and its chat template;
- ``metrics.jsonl`` (one line per logged step), ``recipe.yaml`` (resolved),
  ``summary.json`` (counts, final losses, timings).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ayar.errors import AyarError
from ayar.recipe import Recipe
from ayar.train.loop import FitResult, MetricsWriter, autocast_dtype, fit
from ayar.train.methods import METHODS
from ayar.ui import console, step_progress


def _save_atomically(out: Path, name: str, save) -> Path:
    """Call ``save(tmp_dir)`` then rename to ``out/name``, so a crash never leaves a half-written folder."""
    final, tmp = out / name, out / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@dataclass
class TrainedRun:
    """What a training run leaves in memory: the fit result and the trained model."""

    result: FitResult
    model: torch.nn.Module
    tokenizer: object
    output_dir: Path


def train_from_recipe(recipe: Recipe, *, overwrite: bool = False) -> TrainedRun:
    """Run the recipe's training stage and write its outputs.

    Raises:
        AyarError: bad data, a model that cannot be loaded, or an output folder that
            already holds a finished run (pass ``overwrite`` to replace it).
    """
    from accelerate import Accelerator

    from ayar.model.adapters import attach_adapter, count_parameters
    from ayar.model.load import load_model, load_tokenizer, resolve_dtype

    out = Path(recipe.output_dir)
    if (out / "summary.json").exists() and not overwrite:
        raise AyarError(f"{out} already holds a finished run; choose another output_dir or pass --overwrite")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    amp = autocast_dtype(recipe.train.precision, accelerator.device)

    m = recipe.model
    tokenizer = load_tokenizer(m.path, chat_template=m.chat_template, revision=m.revision,
                               trust_remote_code=m.trust_remote_code)
    method = METHODS[recipe.method]
    train_examples, stats = method.build_examples(recipe.data.train, tokenizer, recipe.data)
    val_examples = method.build_examples(recipe.data.val, tokenizer, recipe.data)[0] if recipe.data.val else []
    if not train_examples:
        raise AyarError(f"{recipe.data.train}: no usable training examples ({stats})")

    full = recipe.adapter.type == "full"
    dtype = resolve_dtype(m.dtype, accelerator.device, full_finetune=full)
    model = load_model(m.path, dtype=dtype, revision=m.revision, trust_remote_code=m.trust_remote_code,
                       device=accelerator.device)
    torch.manual_seed(recipe.train.seed)  # adapter initialisation
    model = attach_adapter(model, recipe.adapter)
    trainable, total = count_parameters(model)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        (out / "summary.json").unlink(missing_ok=True)
        console.print(
            f"[bold]{method.name}[/] on {len(train_examples)} examples ({stats.target_tokens} target tokens"
            f"{f', {stats.truncated} truncated' if stats.truncated else ''}"
            f"{f', {stats.dropped_no_target} dropped with no target left' if stats.dropped_no_target else ''}); "
            f"{recipe.adapter.type}: {trainable:,} of {total:,} parameters trainable; "
            f"weights {str(dtype).removeprefix('torch.')}, autocast {str(amp).removeprefix('torch.') if amp else 'off'}"
        )
    writer = MetricsWriter(out / "metrics.jsonl") if accelerator.is_main_process else None
    with step_progress(method.name) as update:
        result = fit(model, train_examples, recipe.train, pad_id=tokenizer.pad_token_id, val_examples=val_examples,
                     accelerator=accelerator, log=writer, progress=update)

    if accelerator.is_main_process:

        def save(folder: Path) -> None:
            model.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)

        _save_atomically(out, "model" if full else "adapter", save)
        (out / "recipe.yaml").write_text(recipe.to_yaml(), encoding="utf-8")
        summary = {"method": method.name, "adapter": recipe.adapter.type, "trainable_parameters": trainable,
                   "total_parameters": total, "data": vars(stats), "val_examples": len(val_examples),
                   **{k: v for k, v in result.to_dict().items() if k != "history"}}
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.replace(tmp, out / "summary.json")
        console.print(f"done: {result.steps} steps, loss {result.final_loss:.4f}"
                      f"{f', eval loss {result.eval_loss:.4f}' if result.eval_loss is not None else ''}; "
                      f"saved to {out}")
    return TrainedRun(result, model, tokenizer, out)
