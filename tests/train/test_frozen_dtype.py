"""A frozen base stored in bf16 under bf16 autocast trains like the fp32-weight path, within a stated tolerance."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from ayar.chat.tokenize import EncodedExample
from ayar.model.adapters import attach_adapter
from ayar.model.load import resolve_dtype
from ayar.recipe import AdapterSection, TrainSection
from ayar.train.loop import fit

# Tolerances of the bf16-weight run against the fp32-weight run, both under bf16 autocast. The only
# difference is where a frozen weight is rounded to bf16 (once at load, or at every matmul: the same
# rounding) and that norms, embeddings and the residual stream are bf16 too. Measured on this run
# (10 steps at lr 1e-2): at most 0.004 nats on any step's loss and a 3.4% relative change of the
# trained adapter; the bounds leave room for other CPUs' kernels.
LOSS_ATOL = 0.01
ADAPTER_RTOL = 0.08


def _examples(n: int, vocab: int) -> list[EncodedExample]:
    """Four fixed random sequences, repeated: a tiny LoRA memorises them within a few steps."""
    g = torch.Generator().manual_seed(7)
    distinct = [torch.randint(3, vocab, (20 + 3 * i,), generator=g).tolist() for i in range(4)]
    return [EncodedExample(ids, [-100] * 6 + ids[6:]) for ids in (distinct[i % 4] for i in range(n))]


def _train(path, weights: torch.dtype) -> tuple[list[float], torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
    torch.manual_seed(0)
    model = attach_adapter(model, AdapterSection(r=8, alpha=16, dropout=0.0))
    cfg = TrainSection(micro_batch_size=4, max_steps=10, learning_rate=1e-2, warmup_ratio=0.0, precision="bf16",
                       seed=3, log_every=1, tracking="none", save_every=None)
    result = fit(model, _examples(32, model.config.vocab_size), cfg, pad_id=0)
    adapter = torch.cat([p.detach().float().flatten() for p in model.parameters() if p.requires_grad])
    return [r["loss"] for r in result.history], adapter


def test_bf16_frozen_weights_match_the_fp32_weight_path(tiny_llama):
    fp32_losses, fp32_adapter = _train(tiny_llama, torch.float32)
    bf16_losses, bf16_adapter = _train(tiny_llama, torch.bfloat16)
    assert fp32_losses[-1] < fp32_losses[0] - 0.1  # it learnt something, so the comparison means something
    assert bf16_losses == pytest.approx(fp32_losses, abs=LOSS_ATOL)
    change = (bf16_adapter - fp32_adapter).norm() / fp32_adapter.norm()
    assert change < ADAPTER_RTOL, float(change)


def test_auto_dtype_is_bf16_only_for_an_adapter_under_bf16_autocast(monkeypatch):
    monkeypatch.setattr("ayar.model.load.bf16_supported", lambda device: True)
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu, autocast=torch.bfloat16) == torch.bfloat16
    assert resolve_dtype("auto", cpu, autocast=None) == torch.float32  # fp32 training keeps fp32 weights
    assert resolve_dtype("auto", cpu, full_finetune=True, autocast=torch.bfloat16) == torch.float32
    assert resolve_dtype("fp32", cpu, autocast=torch.bfloat16) == torch.float32
