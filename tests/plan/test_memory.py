"""Each memory and FLOP term against a formula worked out by hand for the tiny Llama.

Tiny Llama: hidden 64, 2 layers, 2 heads x 32, 1 KV head, MLP 128, vocab 512, tied embeddings.
Per layer the linear weights are q 64x64, k 32x64, v 32x64, o 64x64, gate/up 128x64, down 64x128:
36,864 parameters; two layers 73,728; with the 512x64 embedding and 5 norms of 64: 106,816.
"""

from __future__ import annotations

import pytest

from ayar.plan import compute, memory
from ayar.plan.inventory import read_inventory

LINEAR = 73_728
TOTAL = 106_816


def setup(**kw) -> memory.Setup:
    base = dict(adapter="lora", r=8, dropout=0.05, target_modules="all-linear", quantization="none", weight_bytes=2,
                act_bytes=2, rows=4, seq=32, targets=40, checkpointing=False)
    return memory.Setup(**{**base, **kw})


@pytest.fixture(scope="module")
def inv(tiny_llama):
    inv = read_inventory(str(tiny_llama))
    assert inv.total == TOTAL and sum(t.numel for t in inv.of_kind("linear")) == LINEAR
    return inv


def test_weights_per_dtype_and_quantisation(inv):
    assert memory.weights(inv, setup()) == TOTAL * 2
    assert memory.weights(inv, setup(weight_bytes=4)) == TOTAL * 4
    rest = (TOTAL - LINEAR) * 4  # embedding and norms in fp32 after prepare_model_for_kbit_training
    assert memory.weights(inv, setup(quantization="nf4")) == pytest.approx(LINEAR * (0.5 + 1 / 64 + 4 / 16384) + rest)
    rows = 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64)  # output rows of the linear layers: one fp32 scale each
    assert memory.weights(inv, setup(quantization="int8")) == LINEAR + rows * 4 + rest


def test_adapter_gradients_optimizer():
    trainable = 16_384  # r=8: per layer 8 x (128 + 96 + 96 + 128 + 192 + 192 + 192) = 8,192
    s = setup()
    assert memory.adapter_weights(trainable, s) == trainable * 4  # peft keeps adapters in fp32
    assert memory.gradients(trainable, s) == trainable * 4
    assert memory.optimizer_states(trainable, s) == trainable * 8  # AdamW: two fp32 moments
    full = setup(adapter="full", weight_bytes=4)
    assert memory.adapter_weights(TOTAL, full) == 0
    assert memory.gradients(TOTAL, full) == TOTAL * 4
    assert memory.optimizer_states(TOTAL, full) == TOTAL * 8


def test_activations_lora(inv):
    # per token and layer: norms 2 x 4h = 512; attention 4 a q = 512; MLP 3 a i = 768;
    # LoRA on 7 linears: inputs 5 x 64 + 64 + 128 = 512 elements x (a + 1 mask byte) + 7 x a r = 1,536 + 112
    per_token_layer = 512 + 512 + 768 + 1536 + 112
    assert memory.layer_activation_bytes(inv, setup()) == per_token_layer
    tokens = 4 * 32
    mask = 4 * 32 * 32
    assert memory.activations(inv, setup()) == 2 * per_token_layer * tokens + mask
    # no dropout: no mask bytes
    assert memory.layer_activation_bytes(inv, setup(dropout=0.0)) == per_token_layer - 512


def test_activations_full_and_checkpointing(inv):
    # full, fp32 weights, bf16 autocast: norms 2 x (4h + 4h) = 1,024; attention 512; MLP 768;
    # every linear keeps its bf16 input: 2 x 512 = 1,024
    full = setup(adapter="full", weight_bytes=4)
    assert memory.layer_activation_bytes(inv, full) == 1024 + 512 + 768 + 1024
    tokens, mask = 4 * 32, 4 * 32 * 32
    per_layer = 3328 * tokens
    # checkpointing keeps each layer's fp32 input plus one layer being recomputed
    assert memory.activations(inv, setup(adapter="full", weight_bytes=4, checkpointing=True)) == \
        2 * tokens * 4 * 64 + per_layer + mask


def test_activations_eager_attention_and_qlora(inv):
    from dataclasses import replace

    eager = replace(inv, dims=replace(inv.dims, attention="eager"))
    assert memory.layer_activation_bytes(eager, setup()) - memory.layer_activation_bytes(inv, setup()) == \
        2 * 32 * (4 + 2)  # heads x seq x (fp32 probabilities + their bf16 copy)
    # 4-bit layers keep their bf16 input (512 elements x 2 bytes) on top of LoRA's
    assert memory.layer_activation_bytes(inv, setup(quantization="nf4")) - memory.layer_activation_bytes(
        inv, setup()) == 1024


def test_loss_head_counts_target_positions_only(inv):
    assert memory.loss_head(inv, setup()) == 40 * 512 * (2 + 12)
    assert memory.loss_head(inv, setup(targets=0)) == 0


def test_reference_terms(inv):
    per = memory.layer_activation_bytes(inv, setup())
    assert memory.reference(inv, setup(reference="precompute", reference_rows=4)) == 0
    assert memory.reference(inv, setup(reference="adapter_disabled", reference_rows=4)) == 4 * 32 * per
    assert memory.reference(inv, setup(reference="copy", reference_rows=4)) == TOTAL * 2 + 4 * 32 * per


def test_gradients_overlap_freed_activations_without_accumulation(inv):
    act = memory.activations(inv, setup()) + memory.loss_head(inv, setup())
    small = memory.breakdown(inv, setup(), 1000, overhead=0, activation_factor=1, host=False)
    assert small["gradients"] == 0  # 4,000 bytes of gradients fit in the activations freed by backward
    big = memory.breakdown(inv, setup(), 10**6, overhead=0, activation_factor=1, host=False)
    assert big["gradients"] == 4 * 10**6 - act
    held = memory.breakdown(inv, setup(accumulating=True), 1000, overhead=0, activation_factor=1, host=False)
    assert held["gradients"] == 4000


def test_breakdown_sums_and_host_data(inv):
    terms = memory.breakdown(inv, setup(host_tokens=1000), 16_384, overhead=100.0, activation_factor=2.0, host=True)
    assert terms["data"] == 1000 * memory.PY_TOKEN_BYTES
    assert terms["activations"] == 2 * memory.activations(inv, setup())
    assert terms["overhead"] == 100.0
    assert memory.breakdown(inv, setup(host_tokens=1000), 0, overhead=0, activation_factor=1, host=False)["data"] == 0


def test_flops_by_hand(inv):
    rows, seq, targets = 2, 16, 10
    tokens = rows * seq
    blocks = 2 * LINEAR * tokens
    attention = 2 * 2 * 64 * seq * tokens  # 2 x layers x q_dim x seq per token
    head = 2 * 64 * 512 * targets
    full = compute.Work(full=True, adapter_params=0, checkpointing=False, reference_forward=False)
    assert compute.micro_batch_flops(inv, rows, seq, targets, full) == 3 * (blocks + head) + 3 * attention
    lora = compute.Work(full=False, adapter_params=100, checkpointing=False, reference_forward=False)
    assert compute.micro_batch_flops(inv, rows, seq, targets, lora) == \
        2 * (blocks + head) + 3 * attention + 3 * 2 * 100 * tokens
    ckpt_ref = compute.Work(full=False, adapter_params=0, checkpointing=True, reference_forward=True)
    assert compute.micro_batch_flops(inv, rows, seq, targets, ckpt_ref) == \
        2 * (blocks + head) + 3 * attention + (blocks + attention) + (blocks + attention + head)
