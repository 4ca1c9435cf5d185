"""Rules of thumb from the guide this project is built from (seeds/000_*.txt), applied to a plan.

Each rule is a small function of the plan and its fit table that returns one
line of advice with its reason, or None. Advice never blocks a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PREFERENCE = ("dpo", "orpo", "cpo", "simpo")
EXTENSION_WORTH = 0.20  # share of tokens vocabulary extension must save to be advised


@dataclass(frozen=True)
class Advice:
    rule: str
    message: str
    reason: str


def data_size(p, rows) -> Advice | None:
    """SFT under 500 examples usually fails; 1,000 is the minimum, 5,000–10,000 ideal (guide §11.2)."""
    if p.recipe.method != "sft":
        return None
    n = p.profile.examples
    if n < 500:
        return Advice("data_size", f"only {n:,} training examples: style fine-tuning with under 500 usually fails",
                      "the guide's minimum is 1,000 high-quality examples, 5,000-10,000 ideal")
    if n < 1000:
        return Advice("data_size", f"{n:,} training examples is below the usual minimum of 1,000",
                      "the guide: minimum 1,000 high-quality examples, 5,000-10,000 ideal")
    return None


def preference_size(p, rows) -> Advice | None:
    """500–5,000 preference pairs usually suffice (guide §6); fewer rarely move the model reliably."""
    if p.recipe.method not in (*PREFERENCE, "kto"):
        return None
    n = p.profile.examples
    unit = "rated replies" if p.recipe.method == "kto" else "preference pairs"
    if n < 500:
        return Advice("preference_size", f"only {n:,} {unit}: collect at least 500",
                      "the guide: 500-5,000 preference pairs usually suffice, quality over quantity")
    return None


def learning_rate(p, rows) -> Advice | None:
    """Usual learning rates: 1e-4 for LoRA, 5e-5 for full SFT (guide §5); preference tuning runs lower."""
    r = p.recipe
    lr, full = r.train.learning_rate, r.adapter.type == "full"
    if r.method in (*PREFERENCE, "kto"):
        low, high, usual = (1e-7, 1e-5, "5e-7 to 5e-6") if full else (1e-6, 1e-4, "5e-6 to 5e-5")
    elif full:
        low, high, usual = 1e-5, 1e-4, "5e-5"
    else:
        low, high, usual = 2e-5, 5e-4, "1e-4 (2e-4 with small data)"
    if low <= lr <= high:
        return None
    what = "high" if lr > high else "low"
    reason = ("a too-high learning rate breaks the base model's abilities (catastrophic forgetting)" if lr > high
              else "a very low learning rate barely moves an adapter in 1-3 epochs")
    return Advice("learning_rate", f"train.learning_rate={lr:g} is {what} for {r.method} with {r.adapter.type}; "
                  f"usual: {usual}", reason)


def epochs(p, rows) -> Advice | None:
    """1–3 epochs; 3+ risks catastrophic forgetting (guide §11.3)."""
    t = p.recipe.train
    if t.max_steps is not None:
        return None
    if t.epochs > 3:
        return Advice("epochs", f"train.epochs={t.epochs:g}: more than 3 passes",
                      "the guide: too many epochs (3+) breaks the base model's abilities; use 1-3 and watch a "
                      "general benchmark")
    return None


def adapter_choice(p, rows) -> Advice | None:
    """LoRA vs QLoRA vs full given the hardware (guide: QLoRA in 95% of cases; LoRA when 16-bit fits and speed
    matters; full only with large GPUs and a need for every bit of quality)."""
    if not rows:
        return None
    row = rows[0]
    r = p.recipe
    fits = row.estimate.fits
    if r.adapter.type == "full" and not fits:
        return Advice("adapter_choice", f"full fine-tuning does not fit on {row.device.name}: use adapter.type: lora",
                      "LoRA trains 0.1-1% of the parameters and keeps 90-95% of full fine-tuning's quality")
    if r.adapter.type != "full" and r.model.quantization == "none" and not fits and "QLoRA" in row.status:
        return Advice("adapter_choice", f"16-bit LoRA does not fit on {row.device.name}: use model.quantization: nf4 "
                      "(QLoRA)", "QLoRA's 4-bit base needs about a quarter of the weight memory; the guide picks it "
                      "in 95% of cases")
    if r.model.quantization == "nf4" and row.device.device_class == "cuda":
        p16 = row.estimate.terms["weights"] * 4  # roughly: bf16 weights are four times nf4's
        if row.estimate.peak + p16 < 0.6 * row.device.memory_bytes:
            return Advice("adapter_choice", f"16-bit LoRA would fit comfortably on {row.device.name}: consider "
                          "model.quantization: none", "the guide: LoRA without quantisation when 16-bit fits and "
                          "speed matters (no dequantisation in every matmul)")
    return None


def targets(p, rows) -> Advice | None:
    """All linear layers give the best results; attention-only loses 5–10% (guide §5)."""
    t = p.recipe.adapter.target_modules
    if p.recipe.adapter.type == "full" or t == "all-linear":
        return None
    if not any(m in t for m in ("gate_proj", "up_proj", "down_proj", "fc1", "fc2", "w1", "w2", "w3")):
        return Advice("targets", f"adapter.target_modules={list(t)} adapts attention only: use all-linear",
                      "the guide: all linear layers give the best results; attention-only loses 5-10% quality")
    return None


def truncation(p, rows) -> Advice | None:
    """Many truncated examples lose their endings (often the answer)."""
    prof = p.profile
    if prof.examples and prof.truncated / max(prof.records, 1) > 0.05:
        return Advice("truncation", f"{prof.truncated:,} of {prof.records:,} records are longer than "
                      f"data.max_length={p.recipe.data.max_length}", "truncation cuts replies' endings, so the "
                      "model learns to stop mid-answer; raise data.max_length if memory allows")
    return None


def fragmentation(p, rows) -> Advice | None:
    """A tokenizer that cuts the training text into many pieces makes every example longer: more compute to
    train and to serve (issue 19). Extension pays when it saves at least :data:`EXTENSION_WORTH` of the tokens:
    the bench's 42% for SmolLM2 does, Gemma's 10% does not pay for the new rows and an adaptation run."""
    from ayar.plan.tokenizer import BENCH, EXTEND_ADD

    fit = p.tokenizer_fit
    if fit is None or not fit.fragmenting:
        return None
    e, x, r = fit.efficiency, fit.extension, p.recipe
    if x is not None and x.reduction < EXTENSION_WORTH:
        return None
    command = f"`ayar tokenizer extend {r.model.path} --data {r.data.train} --add {EXTEND_ADD} --out DIR`"
    figures = f"{e.fertility:.2f} tokens per word, {e.split_3plus:.0%} of words in 3+ pieces"
    if x is None:
        return Advice("fragmentation", f"the tokenizer cuts this data finely ({figures}); extending its vocabulary "
                      f"may cut the tokens, not estimated here ({fit.note}): {command}", f"compute to train and "
                      f"serve grows with the tokens; as measured elsewhere, {BENCH}")
    return Advice("fragmentation", f"the tokenizer cuts this data finely ({figures}); extending its vocabulary "
                  f"would cut the tokens by about {x.reduction:.0%} (estimate): {command}, then train with "
                  "adapter.train_embeddings: new", f"compute to train and serve grows with the tokens; estimate from "
                  f"{x.added:,} tokens learned on {x.learned_texts:,} sampled texts, tokens counted on the other "
                  f"{x.heldout_texts:,}; {BENCH}")


RULES: dict[str, Callable] = {f.__name__: f for f in (data_size, preference_size, learning_rate, epochs,
                                                        adapter_choice, targets, truncation, fragmentation)}


def advise(p, rows) -> list[Advice]:
    """Every rule's advice for plan ``p`` and its fit table ``rows`` (first row: the main device)."""
    return [a for rule in RULES.values() if (a := rule(p, rows)) is not None]
