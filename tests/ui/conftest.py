"""A workspace for the workbench tests: a recipe, its data, one finished tiny run and an edited copy of it."""

from __future__ import annotations

import shutil

import pytest
import yaml
from ui_helpers import fake_examples, write_recipe

from helpers import colour_conversations, write_jsonl


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_llama):
    """``ws/`` with recipe.yaml (3 steps), data/train.jsonl, runs/run-a (trained) and runs/run-b (run-a, lr edited)."""
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    ws = tmp_path_factory.mktemp("ws")
    (ws / "data").mkdir()
    write_jsonl(ws / "data" / "train.jsonl", colour_conversations(40, seed=0))
    (ws / "data" / "data_card.md").write_text("# Data card\n\n40 conversations, no personal data found.\n")
    write_recipe(ws, tiny_llama, "recipe.yaml", "runs/run-a")
    train_from_recipe(load_recipe(ws / "recipe.yaml"))
    run_a, run_b = ws / "runs" / "run-a", ws / "runs" / "run-b"
    shutil.copytree(run_a, run_b)
    recipe = yaml.safe_load((run_b / "recipe.yaml").read_text())
    recipe["train"]["learning_rate"] = 5e-3
    (run_b / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    fake_examples(run_a)
    return ws
