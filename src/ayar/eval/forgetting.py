"""Forgetting guard: did tuning make the model worse at ordinary language?

Fine-tuning on a narrow task can erode what the base model knew ("catastrophic
forgetting"). A cheap signal is the perplexity of general text the tuning data
did not contain: this module scores the same texts with the base and the tuned
model, and flags the run when the tuned perplexity is worse by more than a
threshold (relative change (tuned - base) / base). The texts are small bundled
Turkish and English passages (``data/general_tr.txt``, ``data/general_en.txt``,
written for ayar) or the user's own file. The result goes to
``RUN_DIR/eval/forgetting.json``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.eval.config import ForgettingSection
from ayar.model.run_folder import RunFolder
from ayar.ui import console

BUNDLED = ("general_tr.txt", "general_en.txt")


def general_texts(path: str | Path | None = None) -> tuple[str, list[str]]:
    """(name, documents): the bundled passages when ``path`` is None, else the user's file.

    Raises:
        DataError: the user's file is missing, unreadable or holds no text.
    """
    if path is None:
        folder = resources.files("ayar.eval").joinpath("data")
        docs = [p.strip() for name in BUNDLED for p in folder.joinpath(name).read_text("utf-8").split("\n\n")]
        return "bundled: " + " + ".join(BUNDLED), [d for d in docs if d]
    from ayar.data.read import read_texts

    return str(path), [t.text for t in read_texts(path)]


def windows(ids: Sequence[int], size: int) -> list[list[int]]:
    """Split a long token sequence into consecutive pieces of at most ``size`` tokens (pieces of one token,
    which score nothing, are dropped)."""
    return [list(ids[i : i + size]) for i in range(0, len(ids), size) if len(ids[i : i + size]) > 1]


def perplexity(model, tokenizer, texts: Sequence[str], *, max_length: int = 512, batch_size: int = 8) -> float:
    """Token-level perplexity over all ``texts``: exp(total negative log-likelihood / tokens scored).

    Every token but the first of each window is scored given the ones before it.

    Raises:
        AyarError: nothing to score (no text, or only one-token texts).
    """
    from ayar.eval.memorisation import _pad_id, score_sequences

    sequences = [w for t in texts for w in windows(tokenizer(t, add_special_tokens=True)["input_ids"], max_length)]
    scores = score_sequences(model, sequences, pad_id=_pad_id(tokenizer), batch_size=batch_size)
    count = sum(len(s.logprobs) for s in scores)
    if count == 0:
        raise AyarError("forgetting check: the general texts hold no tokens to score")
    return math.exp(-sum(float(s.logprobs.sum()) for s in scores) / count)


def forgetting_check(base_model, tuned_model, tokenizer, texts: Sequence[str], threshold: float = 0.10, *,
                     dataset: str = "custom", max_length: int = 512, batch_size: int = 8) -> dict[str, Any]:
    """Perplexity of ``texts`` under the base and the tuned model, and whether it got too much worse.

    Args:
        base_model: the model before tuning; None when ``tuned_model`` is a PEFT model: its
            adapter is switched off for the base measurement (one model in memory).
        tuned_model: the model after tuning (eval mode).
        tokenizer: shared by both.
        texts: general text, not from the tuning data.
        threshold: flag when (tuned - base) / base exceeds it.
        dataset: a name for the texts, written into the result.

    Returns:
        ``{"dataset", "base_ppl", "tuned_ppl", "relative_change", "threshold", "flag"}``; a warning is
        printed when ``flag`` is true.
    """
    settings = {"max_length": max_length, "batch_size": batch_size}
    if base_model is None:
        if not _is_peft(tuned_model):
            raise AyarError("forgetting check: no base model given and the tuned model has no adapter to switch "
                            "off; pass the base model")
        switch = tuned_model.disable_adapter()
        base_model = tuned_model
    else:
        switch = nullcontext()
    with switch:
        base_ppl = perplexity(base_model, tokenizer, texts, **settings)
    tuned_ppl = perplexity(tuned_model, tokenizer, texts, **settings)
    result = judge_forgetting(base_ppl, tuned_ppl, threshold)
    if result["flag"]:
        console.print(f"warning: forgetting: general-text perplexity rose {result['relative_change']:+.1%} "
                      f"({base_ppl:.2f} -> {tuned_ppl:.2f}) on {dataset}, above the {threshold:.0%} threshold; "
                      "consider a lower learning rate, fewer epochs, a smaller LoRA rank, or mixing general "
                      "data into training", style="yellow", markup=False)
    return {"dataset": dataset, **result}


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def judge_forgetting(base_ppl: float, tuned_ppl: float, threshold: float) -> dict[str, Any]:
    """The flag logic: relative change (tuned - base) / base, flagged when strictly above ``threshold``."""
    change = (tuned_ppl - base_ppl) / base_ppl
    return {"base_ppl": round(base_ppl, 4), "tuned_ppl": round(tuned_ppl, 4), "relative_change": round(change, 4),
            "threshold": threshold, "flag": change > threshold}


def run_forgetting(run: str | Path | RunFolder, config: ForgettingSection | None = None, *, model=None,
                   tokenizer=None, base_model=None) -> dict[str, Any]:
    """Check a finished run and write ``RUN_DIR/eval/forgetting.json``.

    An adapter run needs one model (the adapter is switched off for the base); a full
    fine-tune needs the recipe's base model beside it.

    Args:
        run: the run folder (or its path).
        model, tokenizer: the already loaded tuned model; None loads it.
        base_model: a full fine-tune's base, already loaded; None loads it when needed.
    """
    from ayar.govern.manifest import write_json_atomic
    from ayar.model.run_folder import load_for_inference

    run = run if isinstance(run, RunFolder) else RunFolder.open(run)
    config = config or ForgettingSection()
    name, texts = general_texts(config.texts)
    if model is None:
        model, tokenizer = load_for_inference(run)
    if _is_peft(model):
        base_model = None  # the adapter is switched off instead
    elif base_model is None:
        base_model, _ = load_for_inference(run.base)
    result = forgetting_check(base_model, model, tokenizer, texts, config.threshold, dataset=name,
                              max_length=config.max_length, batch_size=config.batch_size)
    write_json_atomic(run.eval_dir / "forgetting.json", result)
    return result
