"""`evaluate_run` loads each model once and hands it to the comparison, the forgetting guard and the
memorisation audit (it used to load the tuned model three times, a full fine-tune's base twice)."""

from __future__ import annotations

import json

import pytest
import yaml

from ayar.eval.config import EvalSection
from helpers import colour_conversations, write_jsonl

pytestmark = pytest.mark.slow  # two training runs and four evaluations of a tiny model: ~45 s


def _train(root, tiny_llama, adapter: dict):
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    recipe = {"model": {"path": str(tiny_llama), "dtype": "fp32"},
              "data": {"train": "train.jsonl", "max_length": 96},
              "adapter": adapter,
              "train": {"learning_rate": 1e-3, "max_steps": 2, "micro_batch_size": 8, "precision": "fp32",
                        "tracking": "none", "save_every": 100},
              "output_dir": f"run-{adapter['type']}"}
    (root / f"{adapter['type']}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return train_from_recipe(load_recipe(root / f"{adapter['type']}.yaml")).output_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama):
    """A LoRA run and a full fine-tune of two steps, with a held-out test split beside train.jsonl."""
    root = tmp_path_factory.mktemp("loads")
    write_jsonl(root / "train.jsonl", colour_conversations(16, seed=0))
    write_jsonl(root / "test.jsonl", colour_conversations(6, seed=7))
    return {kind: _train(root, tiny_llama, {"type": kind, "r": 4, "alpha": 8, "dropout": 0.0})
            for kind in ("lora", "full")}


def _count_loads(monkeypatch) -> list[str]:
    """Patch the one weight loader; returns the list it appends each loaded model path to."""
    import ayar.model.load

    loaded: list[str] = []
    real = ayar.model.load.load_model

    def counting(path, **kwargs):
        loaded.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(ayar.model.load, "load_model", counting)
    return loaded


SECTION = EvalSection(n=3, metrics=["exact_match", "perplexity"], dtype="fp32", bootstrap=100,
                      generation={"max_new_tokens": 4},
                      forgetting={"max_length": 32},
                      memorisation={"candidates": 10, "max_records": 4, "max_length": 32, "prefix_tokens": 4,
                                    "continuation_tokens": 4})


@pytest.mark.parametrize("kind", ["lora", "full"])
def test_an_evaluation_loads_each_model_once(runs, tiny_llama, monkeypatch, kind):
    from ayar.eval.compare import evaluate_run

    loaded = _count_loads(monkeypatch)
    evaluate_run(runs[kind], SECTION)
    out = runs[kind] / "eval"
    for name in ("comparison.json", "forgetting.json", "memorisation.json"):
        assert (out / name).is_file(), name
    base, tuned = str(tiny_llama), str(runs[kind] / "model")
    # lora: the baseline, then the base under the run's adapter; full: the baseline (kept for the forgetting
    # guard), then the fine-tuned weights. The tuned model is loaded once for replies, forgetting and memorisation.
    assert loaded == ([base, base] if kind == "lora" else [base, tuned])
    forgetting = json.loads((out / "forgetting.json").read_text())
    assert forgetting["base_ppl"] > 1 and forgetting["tuned_ppl"] > 1


def test_the_forgetting_base_of_a_full_fine_tune_is_the_recipe_base(runs, tiny_llama, monkeypatch):
    """With an endpoint-free baseline other than the base, the guard loads the base itself (once)."""
    from ayar.eval.compare import evaluate_run

    loaded = _count_loads(monkeypatch)
    evaluate_run(runs["full"], SECTION.model_copy(update={"baseline": "none"}))
    assert loaded == [str(runs["full"] / "model"), str(tiny_llama)]
