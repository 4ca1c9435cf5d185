"""QLoRA: a 4-bit NF4 base (bitsandbytes, CPU) under a LoRA adapter trains and reloads."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from ayar.errors import AyarError
from ayar.recipe import load_recipe, validate_recipe
from helpers import colour_conversations, write_jsonl

bnb = pytest.importorskip("bitsandbytes")


def test_qlora_trains_and_adapter_reloads_on_4bit_base(tmp_path, tiny_llama):
    from ayar.eval.generate import load_for_inference
    from ayar.train.run import train_from_recipe

    write_jsonl(tmp_path / "train.jsonl", colour_conversations(96, seed=0))
    recipe = {"model": {"path": str(tiny_llama), "quantization": "nf4", "dtype": "fp32"},
              "data": {"train": "train.jsonl", "max_length": 64},
              "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
              "train": {"max_steps": 30, "micro_batch_size": 8, "learning_rate": 1e-2, "precision": "fp32",
                        "log_every": 1, "tracking": "none"},
              "output_dir": "run"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = train_from_recipe(load_recipe(tmp_path / "r.yaml"))
    base = run.model.get_base_model()
    assert isinstance(base.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.quant_state.nested  # double quantisation
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.5, losses

    model, _ = load_for_inference(str(tmp_path / "run"), dtype="fp32")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    run.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, run.model(input_ids=ids).logits)


def test_quantized_full_finetune_is_refused():
    with pytest.raises(AyarError, match="model.quantization needs adapter.type lora or dora"):
        validate_recipe({"model": {"path": "m", "quantization": "nf4"}, "data": {"train": "t"},
                         "adapter": {"type": "full"}})


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    import builtins

    from ayar.model.load import quantization_config

    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(AyarError, match="pip install bitsandbytes"):
        quantization_config("nf4", torch.bfloat16)
