"""Fixtures for the planner's tests: a tiny Gemma 3 text model next to the shared Llama and Qwen2 ones."""

from __future__ import annotations

import pytest
import yaml

from helpers import colour_conversations, write_jsonl


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory):
    """A random Gemma 3 text model (the 270M's architecture, tiny sizes), saved as safetensors."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                              max_position_embeddings=256)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("gemma3") / "model"
    Gemma3ForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def sft_recipe(tmp_path, tiny_llama):
    """A small SFT recipe on the tiny Llama; returns a function that writes it with overrides."""
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(64, seed=0))

    def make(**sections) -> str:
        recipe = {"model": {"path": str(tiny_llama)}, "data": {"train": "train.jsonl", "max_length": 128},
                  "adapter": {"r": 8}, "train": {"max_steps": 3, "micro_batch_size": 4, "tracking": "none",
                                                 "learning_rate": 1e-4}, "output_dir": "run"}
        for key, value in sections.items():
            recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return str(path)

    return make
