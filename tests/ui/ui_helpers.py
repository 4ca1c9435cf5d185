"""Recipes and evaluation files for the workbench tests."""

from __future__ import annotations

import json

import yaml


def write_recipe(folder, tiny_llama, name: str, output_dir: str, steps: int = 3, save_every: int = 100) -> None:
    recipe = {"model": {"path": str(tiny_llama), "dtype": "fp32"},
              "data": {"train": "data/train.jsonl", "max_length": 128},
              "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
              "train": {"learning_rate": 1e-2, "max_steps": steps, "micro_batch_size": 8, "precision": "fp32",
                        "tracking": "none", "save_every": save_every, "log_every": 1},
              "output_dir": output_dir}
    (folder / name).write_text(yaml.safe_dump(recipe), encoding="utf-8")


def fake_examples(run, n: int = 4) -> None:
    """What `ayar eval` leaves for the human evaluation and the compare page (no generation needed)."""
    (run / "eval").mkdir(exist_ok=True)
    rows = [{"id": f"ex{i}", "prompt": [{"role": "user", "content": f"Ürün: mavi bir masa {i}"}],
             "reference": None, "base": f"taban yanıt {i}", "tuned": f"ayarlı yanıt {i}", "scores": {}}
            for i in range(n)]
    (run / "eval" / "examples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (run / "eval" / "comparison.json").write_text(json.dumps({"metrics": [
        {"name": "exact_match", "base": 0.1, "tuned": 0.4, "diff": 0.3, "ci95": [0.1, 0.5]}]}))
