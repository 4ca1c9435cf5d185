"""Peak training memory, term by term, from shapes alone.

Each term is a small formula of the model's sizes (:class:`~ayar.plan.inventory.Dims`)
and the run's settings (:class:`Setup`). Bytes per element: ``w`` the frozen
weights' dtype, ``a`` the activation (autocast) dtype, ``r`` the residual stream
(the dtype of the non-quantised weights: fp32 after QLoRA's preparation).

Activations are what autograd keeps for the backward pass, per token and layer
(PyTorch saves an input only when a gradient needs it, so a frozen linear layer
keeps nothing but a LoRA adapter on it keeps its own copy of the input):

- RMSNorm: the fp32 input (``4h``), plus with trainable weights the normalised output (``r h``);
- attention (SDPA, flash kernel): q, k, v repeated to all heads, output (``4 a q``);
  eager attention adds the probabilities (``heads x seq x (4 + a)``);
- MLP (gated): gate, activation, up (``3 a i``), plus down's input with a trainable down (``a i``);
- a trainable linear layer keeps its input (``a x in``); a LoRA adapter keeps its dropout mask
  (1 byte) and the cast input (``a x in``) and ``A``'s output (``a r``); a 4-bit layer (bitsandbytes)
  keeps its input cast to the compute dtype (``a x in``).

With gradient checkpointing only each layer's input (``r h``) is kept, plus one
layer's activations while it is recomputed. The loss head projects only target
positions (:class:`ayar.train.losses.TargetLoss`): ``targets x vocab`` logits in
``a``, their fp32 copy, the saved log-softmax and its gradient (``a + 12`` bytes each).

A distillation teacher computed on the fly stays resident (its weights in its own dtype, plus
a run's adapter in fp32) and adds the transient of a forward without gradient: one layer's
activations and its fp32 logits at the target positions with their log-softmax and
probabilities (12 bytes each). A precomputed teacher holds that memory only during the pass
before training, beside the student's weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ayar.plan.inventory import Inventory, lora_targets

NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit codes + 8-bit absmax per 64 + fp32 per 256 absmax (double quant)
LOSS_HEAD_BYTES = 12  # fp32 logits, saved log-softmax, fp32 gradient (plus the logits in the activation dtype)
TEACHER_LOGIT_BYTES = 12  # the teacher's fp32 logits at target positions, their log-softmax and probabilities
PY_TOKEN_BYTES = 48  # a token id and its label held in Python lists on the host (8-byte pointers + int objects)


@dataclass(frozen=True)
class Setup:
    """One training configuration on one device, resolved from the recipe."""

    adapter: str  # lora, dora, full
    r: int
    dropout: float
    target_modules: object
    quantization: str  # none, nf4, int8
    weight_bytes: int  # the frozen (or full) weights' dtype: 2 (bf16/fp16) or 4 (fp32)
    act_bytes: int  # autocast dtype: 2, or 4 without autocast
    rows: int  # sequences in the largest micro-batch (pair methods: 2 x micro_batch)
    seq: int  # padded length of the largest micro-batch
    targets: int  # target positions in that micro-batch (projected by the loss head)
    checkpointing: bool
    reference: str | None = None  # adapter_disabled, copy, precompute, or None
    reference_rows: int = 0  # rows run through the reference without gradient (KTO's KL rows too)
    no_grad_rows: int = 0  # policy rows run without gradient (KTO's KL rows)
    host_tokens: int = 0  # tokens held in Python lists (counted on a CPU device only)
    accumulating: bool = False  # several micro-batches per step: gradients live through the next forward


def _residual_bytes(s: Setup) -> int:
    return 4 if s.quantization != "none" else s.weight_bytes


def weights(inv: Inventory, s: Setup) -> float:
    """The model's weights: linear layers quantised when asked, the rest in the residual dtype."""
    if s.quantization == "none":
        return inv.total * s.weight_bytes
    linear = inv.of_kind("linear")
    n_linear = sum(t.numel for t in linear)
    rest = (inv.total - n_linear) * 4  # prepare_model_for_kbit_training casts the rest to fp32
    if s.quantization == "nf4":
        return n_linear * NF4_BYTES + rest
    return n_linear + sum(t.shape[0] for t in linear) * 4 + rest  # int8 codes + fp32 scale per row


def trainable_bytes(s: Setup) -> int:
    """Bytes per trainable parameter: adapters are fp32 (peft upcasts them); full training uses the weights' dtype."""
    return 4 if s.adapter != "full" else s.weight_bytes


def adapter_weights(trainable: int, s: Setup) -> float:
    return 0.0 if s.adapter == "full" else trainable * 4.0


def gradients(trainable: int, s: Setup) -> float:
    return trainable * trainable_bytes(s)


def optimizer_states(trainable: int, s: Setup) -> float:
    """AdamW: first and second moments, each like its parameter."""
    return 2.0 * trainable * trainable_bytes(s)


def layer_activation_bytes(inv: Inventory, s: Setup) -> float:
    """Bytes autograd keeps per token for one decoder layer (see the module docstring)."""
    d = inv.dims
    a, r, h, i, q = s.act_bytes, _residual_bytes(s), d.hidden, d.intermediate, d.q_dim
    full = s.adapter == "full"
    gemma = d.model_type.startswith("gemma")
    norms = (4 if gemma else 2) * (4 * h + (r * h if full else 0))
    attention = 4 * a * q + (d.heads * s.seq * (4 + a) if d.attention == "eager" else 0)
    mlp = 3 * a * i
    per_layer_linear = {t.module: t for t in inv.tensors if t.kind == "linear" and ".layers.0." in t.name}
    saved_inputs = 0.0
    if full:
        saved_inputs = sum(a * t.shape[1] for t in per_layer_linear.values())
    elif s.quantization != "none":
        saved_inputs = sum(a * t.shape[1] for t in per_layer_linear.values())  # the 4-bit matmul keeps its input
    lora = 0.0
    if not full:
        targets = {t.module for t in lora_targets(inv, s.target_modules)}
        for name, t in per_layer_linear.items():
            if name in targets:
                lora += t.shape[1] * (a + (1 if s.dropout > 0 else 0)) + a * s.r
    return norms + attention + mlp + saved_inputs + lora


def activations(inv: Inventory, s: Setup) -> float:
    """Saved activations of the largest micro-batch, all layers, plus the attention mask.

    With gradient checkpointing: each layer's input, plus one layer recomputed.
    """
    d = inv.dims
    tokens = s.rows * s.seq
    per_layer = layer_activation_bytes(inv, s) * tokens
    mask = s.rows * s.seq * s.seq  # (rows, 1, seq, seq) bool, built once and shared by the layers
    if s.checkpointing:
        return d.layers * tokens * _residual_bytes(s) * d.hidden + per_layer + mask
    return d.layers * per_layer + mask


def loss_head(inv: Inventory, s: Setup) -> float:
    """Logits at target positions only: ``targets x vocab x (a + 12)`` bytes."""
    return s.targets * inv.dims.vocab * (s.act_bytes + LOSS_HEAD_BYTES)


def reference(inv: Inventory, s: Setup) -> float:
    """A frozen copy's weights, or the transient of a reference forward (one layer and its logits)."""
    if s.reference in (None, "precompute") or not s.reference_rows:
        return 0.0
    transient = s.reference_rows * s.seq * layer_activation_bytes(inv, s)
    if s.reference == "copy":
        return inv.total * s.weight_bytes + transient
    return transient


def teacher_weights(teacher: Inventory, s: Setup, adapter_params: int = 0) -> float:
    """The teacher's resident weights: ``s`` is :func:`teacher_setup`; a run's adapter on it in fp32."""
    return weights(teacher, s) + adapter_params * 4.0


def teacher_setup(s: Setup, weight_bytes: int, quantization: str) -> Setup:
    """The student's micro-batch seen by a frozen teacher: its dtype and quantisation, no adapter targets."""
    from dataclasses import replace

    return replace(s, adapter="lora", target_modules=[], quantization=quantization, weight_bytes=weight_bytes,
                   checkpointing=False)


def teacher_forward(teacher: Inventory, s: Setup) -> float:
    """Transient of a no-grad teacher forward on ``s``'s micro-batch: one layer, and the fp32 logits at targets."""
    return s.rows * s.seq * layer_activation_bytes(teacher, s) + s.targets * teacher.dims.vocab * TEACHER_LOGIT_BYTES


def breakdown(inv: Inventory, s: Setup, trainable: int, *, overhead: float, activation_factor: float,
              host: bool) -> dict[str, float]:
    """Every memory term in bytes (their sum is the predicted peak).

    Gradients count in full only with gradient accumulation (they then live through the
    next micro-batch's forward); with one micro-batch per step, only what exceeds the
    activations freed during the backward pass.

    Args:
        overhead: the device class's calibrated fixed memory (libraries, context, allocator slack).
        activation_factor: calibrated measured/formula ratio for activations and the loss head.
        host: the device is this machine's RAM (the tokenised data counts too).
    """
    act = activations(inv, s) * activation_factor
    head = loss_head(inv, s) * activation_factor
    grads = gradients(trainable, s)
    if not s.accumulating:
        # One micro-batch per step: gradients appear while the backward pass frees activations,
        # so only the part of them beyond the activations adds to the peak.
        grads = max(0.0, grads - act - head)
    return {
        "weights": weights(inv, s),
        "adapter": adapter_weights(trainable, s),
        "gradients": grads,
        "optimizer": optimizer_states(trainable, s),
        "activations": act,
        "loss_head": head,
        "reference": reference(inv, s) * (activation_factor if s.reference != "copy" else 1.0),
        "data": s.host_tokens * PY_TOKEN_BYTES if host else 0.0,
        "overhead": overhead,
    }
