"""Preference metrics on held-out pairs: does the tuned model prefer the chosen reply?

Two measures, both from per-sequence log-probabilities (no generation):

- **reward accuracy and margin** of the tuned model, with the implied rewards
  of its training method: for DPO-style runs (dpo, and sft / kto runs, scored
  as DPO with ``beta`` 0.1) ``beta * (log pi(y|x) - log ref(y|x))`` against the
  reference the run trained with (the base with the adapter off, the merged
  ``init_adapter`` model, or the base model of a full fine-tune); for ORPO, CPO
  and SimPO their reference-free rewards. The share of pairs whose chosen
  reward is higher, and the mean difference.
- **prefers chosen**, for base and tuned alike: the share of pairs where the
  model's per-token mean log-probability of the chosen reply is higher than
  of the rejected one. The base has no implied reward, but it has this. "Base"
  is the model the run started from: its adapter switched off (which includes
  a merged ``init_adapter``), or the model a full fine-tune started from.

The pairs go through the training code's tokenisation and truncation
(:func:`ayar.train.preference_data.read_pairs`), so they are scored exactly as
a preference stage would see them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ayar.data.formats import detect_format
from ayar.data.read import iter_jsonl
from ayar.errors import AyarError
from ayar.model.run_folder import RunFolder


def is_preference_file(path: str | Path) -> bool:
    """True when the file's first record is a preference pair (prompt, chosen, rejected)."""
    for _, raw in iter_jsonl(path):
        return detect_format(raw) == "preference"
    return False


def _prefers_chosen(model, objective, pairs, pad_id: int, batch_size: int) -> float:
    """Share of pairs whose chosen reply has the higher per-token mean log-prob (one pass, no reference)."""
    from ayar.train.objectives import sequence_logps

    wins = 0
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        batch = objective.collate(pairs[start:start + batch_size], pad_id)
        n = batch["weight"].shape[0]
        sums, counts = sequence_logps(model, batch["input_ids"].to(device), batch["labels"].to(device),
                                      batch["attention_mask"].to(device))
        means = sums / counts.clamp(min=1)
        wins += int((means[:n] > means[n:]).sum())
    return wins / len(pairs)


@torch.no_grad()
def preference_scores(run: str | Path | RunFolder, pairs_path: str | Path, *, n: int | None = None,
                      batch_size: int = 8) -> dict:
    """Score a finished run on held-out preference pairs; see the module docstring.

    Args:
        run: the run folder (or its path).

    Raises:
        AyarError: not a run folder, or no usable pair in the file.
    """
    from accelerate import Accelerator

    from ayar.model.run_folder import load_for_inference, starting_model
    from ayar.train.loop import evaluate
    from ayar.train.objectives import PairObjective, Reference, make_objective
    from ayar.train.preference_data import read_pairs
    from ayar.train.preference_losses import PAIR_LOSSES

    run = run if isinstance(run, RunFolder) else RunFolder.open(run)
    recipe = run.recipe
    model, tokenizer = load_for_inference(run, dtype=torch.float32)
    pairs, stats = read_pairs(str(pairs_path), tokenizer, recipe.data.max_length,
                              recipe.preference.max_prompt_length, "drop")
    pairs = pairs[:n] if n else pairs
    if not pairs:
        raise AyarError(f"{pairs_path}: no usable preference pair ({dict(stats.dropped) or 'empty file'})")
    m = recipe.model
    continuing = bool(m.init_adapter) and m.init_adapter_mode == "continue"
    start = None
    if hasattr(model, "disable_adapter") and not continuing:
        reference = Reference("adapter_disabled")  # the base, with a merged init adapter when there was one
    else:  # a full fine-tune or a continued adapter: rebuild the model the run started from
        start = starting_model(run, dtype=torch.float32)
        reference = Reference("copy", start)
    if recipe.method in PAIR_LOSSES:
        objective = make_objective(recipe, reference)
        method = recipe.method
    else:
        objective = PairObjective(PAIR_LOSSES["dpo"]["sigmoid"], {"beta": 0.1}, reference=reference)
        method = "dpo (beta 0.1, implied rewards)"
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    _, tuned_stats = evaluate(objective.wrap(model), pairs, tokenizer.pad_token_id, batch_size, accelerator, None,
                              objective)
    if start is None:
        with model.disable_adapter():
            base_prefers = _prefers_chosen(model, objective, pairs, tokenizer.pad_token_id, batch_size)
    else:
        base_prefers = _prefers_chosen(start, objective, pairs, tokenizer.pad_token_id, batch_size)
    return {
        "dataset": str(pairs_path), "n_pairs": len(pairs), "dropped": dict(stats.dropped), "rewards": method,
        "base": {"prefers_chosen": base_prefers},
        "tuned": {"reward_accuracy": tuned_stats["rewards/accuracy"], "margin": tuned_stats["rewards/margins"],
                  "prefers_chosen": tuned_stats["prefers_chosen"]},
    }
