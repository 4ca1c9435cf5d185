"""The offline demo: synthetic Turkish data -> tiny model -> pretrain -> LoRA SFT -> base vs tuned.

Every stage runs through the same code a user's recipe takes: the demo writes
its recipes under ``<out>/recipes/`` (so any stage can be re-run by hand with
``ayar train``), trains with :func:`ayar.train.run.train_from_recipe`, and
evaluates both models on the held-out split with greedy decoding.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from ayar.demo.products import SYSTEM, corpus_texts, product_splits, write_jsonl
from ayar.ui import console

# Sizes chosen so the whole demo runs in a few minutes on a 2-core CPU.
TINY = {"arch": "llama", "vocab_size": 2048, "hidden_size": 256, "intermediate_size": 512,
        "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
SPLITS = {"n_train": 2000, "n_val": 200, "n_test": 200}


def _write_recipe(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def pretrain_recipe(steps: int) -> dict:
    return {
        "model": {"path": "../models/tiny", "dtype": "fp32"},
        "data": {"train": "../data/corpus.txt", "max_length": 128},
        "method": "pretrain",
        "adapter": {"type": "full"},
        "train": {"learning_rate": 3e-3, "max_steps": steps, "micro_batch_size": 32, "warmup_ratio": 0.05,
                  "weight_decay": 0.01, "log_every": 10},
        "output_dir": "../runs/pretrain",
    }


def sft_recipe(epochs: float) -> dict:
    return {
        "model": {"path": "../runs/pretrain/model"},
        "data": {"train": "../data/train.jsonl", "val": "../data/val.jsonl", "max_length": 256},
        "method": "sft",
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "train": {"learning_rate": 5e-3, "epochs": epochs, "micro_batch_size": 16, "warmup_ratio": 0.05,
                  "eval_every": 50, "log_every": 10},
        "output_dir": "../runs/sft",
    }


def prepare_recipe() -> dict:
    """Support tickets with personal data -> redacted, deduplicated, split; the model section is unused here."""
    return {
        "model": {"path": "../models/tiny"},
        "data": {"train": "../data/tickets_prepared/train.jsonl"},
        "prepare": {"sources": [{"path": "../data/tickets_raw.jsonl"}], "on_error": "skip",
                    "pii": {"default_operator": "mask"}, "dedup": {"exact": True, "near": True, "threshold": 0.8},
                    "output_dir": "../data/tickets_prepared"},
    }


def run_prepare_stage(out: Path, seed: int) -> dict:
    """Write raw tickets (with PII and duplicates) and run ``ayar prepare`` on them."""
    from ayar.data.card import summary_line
    from ayar.data.prepare import prepare
    from ayar.demo.tickets import ticket_records
    from ayar.recipe import load_recipe

    write_jsonl(out / "data" / "tickets_raw.jsonl", ticket_records(1000, seed=seed))
    recipe_path = _write_recipe(out / "recipes" / "prepare.yaml", prepare_recipe())
    summary = prepare(load_recipe(recipe_path).prepare, recipe_path.parent, show_progress=False)
    console.print(summary_line(summary), markup=False)
    console.print(f"data card: {out / 'data' / 'tickets_prepared' / 'data_card.md'}", markup=False)
    return summary


def evaluate_products(target: str, records: list[dict]) -> tuple[dict, list[str]]:
    """Greedy replies of ``target`` on held-out product records, scored as JSON."""
    from ayar.eval.generate import generate, load_for_inference
    from ayar.eval.structured import structured_scores

    model, tokenizer = load_for_inference(target)
    prompts = [r["messages"][:-1] for r in records]
    replies = generate(model, tokenizer, prompts, max_new_tokens=48, batch_size=50)
    references = [r["messages"][-1]["content"] for r in records]
    return structured_scores(replies, references, ["category", "tags"]), replies


def run_demo(out: str | Path = "demo_out", *, pretrain_steps: int = 350, sft_epochs: float = 3.0,
             n_eval: int = 200, seed: int = 0) -> dict:
    """Run the whole demo under ``out`` (replacing an earlier demo there) and return the results."""
    from ayar.model.tiny import build_tiny_model
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    out = Path(out)
    start = time.perf_counter()
    for sub in ("data", "models", "runs", "recipes"):  # only what the demo itself writes
        shutil.rmtree(out / sub, ignore_errors=True)

    console.rule("0. prepare: support tickets with personal data -> redacted, deduplicated, split")
    prepared = run_prepare_stage(out, seed)

    console.rule("1. data: synthetic Turkish products -> JSON {category, tags}")
    splits = product_splits(seed=seed, **SPLITS)
    for name, records in splits.items():
        write_jsonl(out / "data" / f"{name}.jsonl", records)
    held_out = [m["content"] for r in splits["test"] for m in r["messages"][1:]]
    corpus = [line for text in corpus_texts(seed=seed, n=6000, exclude=held_out) for line in text.split("\n")]
    (out / "data" / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    console.print(f"train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])}; "
                  f"corpus {len(corpus)} lines; example: {splits['test'][0]['messages'][1]['content']!r}")

    console.rule("2. tiny model: BPE tokenizer + random Llama weights")
    build_tiny_model(out / "models" / "tiny", corpus, seed=seed, **TINY)

    console.rule("3. pretrain briefly on the corpus (full fine-tuning)")
    pre = _write_recipe(out / "recipes" / "pretrain.yaml", pretrain_recipe(pretrain_steps))
    train_from_recipe(load_recipe(pre), overwrite=True)

    console.rule("4. SFT with LoRA on the product task")
    sft = _write_recipe(out / "recipes" / "sft.yaml", sft_recipe(sft_epochs))
    train_from_recipe(load_recipe(sft), overwrite=True)

    console.rule(f"5. base vs tuned on {n_eval} held-out products (greedy)")
    test = splits["test"][:n_eval]
    base_scores, base_replies = evaluate_products(str(out / "runs" / "pretrain" / "model"), test)
    tuned_scores, tuned_replies = evaluate_products(str(out / "runs" / "sft"), test)
    results = {"base": base_scores, "tuned": tuned_scores, "n_eval": len(test),
               "prepare": {k: prepared[k] for k in ("counts", "pii") if k in prepared},
               "seconds": round(time.perf_counter() - start, 1),
               "examples": [{"prompt": r["messages"][1]["content"], "expected": r["messages"][2]["content"],
                             "base": b, "tuned": t} for r, b, t in list(zip(test, base_replies, tuned_replies, strict=True))[:5]]}
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    _print_results(results)
    return results


def _print_results(results: dict) -> None:
    from rich.table import Table

    table = Table(title=f"held-out products (n={results['n_eval']})")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("tuned", justify="right")
    for key in results["base"]:
        table.add_row(key, f"{results['base'][key]:.1%}", f"{results['tuned'][key]:.1%}")
    console.print(table)
    ex = results["examples"][0]
    console.print(f"prompt:   {ex['prompt']!r}\nexpected: {ex['expected']}\nbase:     {ex['base'][:120]!r}\n"
                  f"tuned:    {ex['tuned']}")
    console.print(f"demo finished in {results['seconds']:.0f} s; system prompt used: {SYSTEM!r}")
