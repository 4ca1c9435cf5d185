"""Fixtures for the server tests: two LoRA adapters on the tiny model, and offline references."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def lora_pair(tiny_llama, tmp_path_factory):
    """Two adapters, ``a`` and ``b``, whose LoRA B matrices are random (not the usual zeros).

    A fresh LoRA adapter is a no-op (B = 0); filling B with N(0, 0.5²) noise, differently
    per adapter, makes base, ``a`` and ``b`` give different greedy replies.
    """
    from peft import LoraConfig, get_peft_model

    from ayar.model.load import load_model, load_tokenizer

    out = {}
    tokenizer = load_tokenizer(str(tiny_llama))
    for seed, name in enumerate(["a", "b"]):
        model = get_peft_model(load_model(str(tiny_llama)), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        folder = tmp_path_factory.mktemp("adapters") / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)  # as `ayar train` does: the adapter carries its tokenizer
        out[name] = folder
    return out


@pytest.fixture(scope="session")
def offline(tiny_llama, lora_pair):
    """Each served model loaded on its own through the offline path (ayar.eval.generate), in fp32."""
    from ayar.eval.generate import load_for_inference

    return {"base": load_for_inference(str(tiny_llama), dtype="fp32"),
            "a": load_for_inference(str(lora_pair["a"]), dtype="fp32"),
            "b": load_for_inference(str(lora_pair["b"]), dtype="fp32")}
