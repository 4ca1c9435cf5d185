"""The demo's style-locking stage: formal ("siz") over informal ("sen") support replies.

Support logs mix both registers, so SFT on them gives a model that answers
either way. A preference stage then locks in the formal one (the guide's
"SFT + DPO"); ORPO does SFT and preference in one stage from the base, as a
comparison. Each model answers the same held-out questions greedily, and the
share of formal replies is counted with :func:`ayar.demo.support.formality`;
the preference runs also report reward accuracy on held-out pairs.
"""

from __future__ import annotations

import random
from pathlib import Path

from ayar.demo.products import write_jsonl
from ayar.demo.profiles import Profile
from ayar.demo.support import formality, support_splits


def style_data(out: Path, seed: int, n_train: int = 1200, n_test: int = 200) -> dict[str, list[dict]]:
    """Write the pair files and a mixed-register SFT file; returns the splits."""
    splits = support_splits(n_train, n_test, seed=seed + 1)
    rng = random.Random(seed)
    mixed = [{"messages": [{"role": "user", "content": p["prompt"]},
                           {"role": "assistant", "content": p["chosen"] if rng.random() < 0.5 else p["rejected"]}]}
             for p in splits["train"]]
    write_jsonl(out / "data" / "support_pairs_train.jsonl", splits["train"])
    write_jsonl(out / "data" / "support_pairs_test.jsonl", splits["test"])
    write_jsonl(out / "data" / "support_sft.jsonl", mixed)
    return splits


def sft_recipe(base: str, profile: Profile) -> dict:
    return {
        "model": {"path": base},
        "data": {"train": "../data/support_sft.jsonl", "max_length": profile.style_max_length},
        "method": "sft",
        "adapter": profile.lora,
        "train": profile.style["sft"],
        "output_dir": "../runs/support-sft",
        "governance": {"ledger": "../governance/ledger.jsonl"},
    }


def dpo_recipe(base: str, profile: Profile) -> dict:
    return {
        "model": {"path": base, "init_adapter": "../runs/support-sft"},
        "data": {"train": "../data/support_pairs_train.jsonl", "val": "../data/support_pairs_test.jsonl",
                 "max_length": profile.style_max_length},
        "method": "dpo",
        "dpo": {"beta": 0.1},
        "preference": {"reference": "precompute", "cache_dir": "../cache"},
        "adapter": {**profile.lora, "train_embeddings": "none"},  # the SFT adapter's rows are merged in already
        "train": profile.style["dpo"],
        "output_dir": "../runs/support-dpo",
        "governance": {"ledger": "../governance/ledger.jsonl"},
    }


def orpo_recipe(base: str, profile: Profile) -> dict:
    return {
        "model": {"path": base},
        "data": {"train": "../data/support_pairs_train.jsonl", "val": "../data/support_pairs_test.jsonl",
                 "max_length": profile.style_max_length},
        "method": "orpo",
        "orpo": {"beta": 0.1},
        "adapter": profile.lora,
        "train": profile.style["orpo"],
        "output_dir": "../runs/support-orpo",
        "governance": {"ledger": "../governance/ledger.jsonl"},
    }


def formal_share(target: str, prompts: list[str], batch_size: int = 50) -> tuple[dict, list[str]]:
    """Greedy replies of ``target`` to ``prompts`` and the share of each register among them."""
    from ayar.eval.generate import generate
    from ayar.model.run_folder import load_for_inference

    model, tokenizer = load_for_inference(target)
    replies = generate(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens=48,
                       batch_size=batch_size, stop=["\n\n"])
    registers = [formality(r) for r in replies]
    n = len(replies)
    return ({"formal_share": registers.count("formal") / n, "informal_share": registers.count("informal") / n,
             "n": n}, replies)


def final_eval(history: list[dict]) -> dict:
    """The last held-out evaluation in a preference run's history (``FitResult.history``)."""
    last = [r for r in history if "eval_rewards/accuracy" in r][-1]
    return {"reward_accuracy": last["eval_rewards/accuracy"], "margin": last["eval_rewards/margins"],
            "eval_loss": last["eval_loss"]}
