"""Model FLOPs of a training step, and the machine's measured bf16 matmul peak: model FLOP utilisation (MFU).

MFU counts the FLOPs the *method* needs, whatever an implementation spends
(Chowdhery et al. 2022, appendix B; Korthikanti et al. 2023 for attention), on
real (non-padding) tokens only, and divides their rate by the bf16 matrix-product
rate measured on the same machine in the same run:

- frozen linear layers (adapter training): forward ``2 N`` plus the backward to the
  activations ``2 N`` per token, no weight gradient; trained ones add ``2 N``;
- adapter matrices (LoRA A and B): ``6 N_lora`` per token;
- causal attention scores and values: ``2 * 2 * heads * head_dim * t`` for the
  token at position ``t`` in the forward, twice that in the backward;
- the output head only where a loss is taken (target positions): ``2 V h`` forward,
  ``2 V h`` to the hidden state, ``2 V h`` more if the head is trained;
- a reference forward (DPO without precompute) adds the forward part once more.

Both frameworks of a comparison are divided by the same count, so their MFU ratio
is their throughput ratio; the padding and the non-target logits TRL computes on
a CPU are not counted as useful work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """What the count needs from a transformers config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> Shape:
        config = getattr(config, "text_config", config)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(config.hidden_size, config.num_hidden_layers, heads,
                   getattr(config, "num_key_value_heads", None) or heads, head_dim, config.intermediate_size,
                   config.vocab_size)

    @property
    def block_params(self) -> int:
        """Linear weights of the transformer blocks (q, k, v, o and a gated MLP), no embeddings."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attn + 3 * self.hidden * self.intermediate)


def lora_params(shape: Shape, r: int) -> int:
    """LoRA A and B parameters with rank ``r`` on every linear layer of the blocks."""
    attn_io = [(shape.hidden, shape.heads * shape.head_dim), (shape.hidden, shape.kv_heads * shape.head_dim),
               (shape.hidden, shape.kv_heads * shape.head_dim), (shape.heads * shape.head_dim, shape.hidden)]
    mlp_io = [(shape.hidden, shape.intermediate)] * 2 + [(shape.intermediate, shape.hidden)]
    return shape.layers * sum(r * (i + o) for i, o in attn_io + mlp_io)


def step_flops(shape: Shape, lengths: list[int], targets: int, *, lora_r: int | None, full: bool = False,
               reference_forward: bool = False) -> float:
    """Useful FLOPs of one training step over rows of ``lengths`` real tokens with ``targets`` loss positions.

    Args:
        shape: the model's dimensions (:meth:`Shape.of`).
        lengths: real (non-padding) tokens of each row in the step.
        targets: positions that carry a loss (the head runs there only).
        lora_r: LoRA rank on every block linear layer; None for no adapter.
        full: every weight is trained (full fine-tuning): weight gradients everywhere.
        reference_forward: a no-grad reference forward of the same rows (DPO on the fly).

    Returns:
        FLOPs (multiply and add counted as two).
    """
    tokens = sum(lengths)
    attn_fwd = sum(2 * shape.heads * shape.head_dim * n * (n + 1) for n in lengths) * shape.layers
    body_fwd = 2 * shape.block_params * tokens
    head_fwd = 2 * shape.vocab * shape.hidden * targets
    total = 2 * body_fwd + 3 * attn_fwd + 2 * head_fwd  # forward + backward to the activations
    if full:
        total += body_fwd + head_fwd  # weight gradients
    if lora_r:
        total += 6 * lora_params(shape, lora_r) * tokens
    if reference_forward:
        total += body_fwd + attn_fwd + head_fwd
    return float(total)


def matmul_peak(device: str = "cpu", size: int | None = None, seconds: float = 1.0) -> float:
    """Measured bf16 matrix-product rate (FLOP/s) on ``device`` with the current thread setting.

    The best of repeated ``size``-cubed products (2048 on a CPU, 8192 on a GPU).
    """
    import torch

    size = size or (8192 if device == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(torch.bfloat16)
    b = torch.randn(size, size, device=device).to(torch.bfloat16)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b  # warm-up: kernel selection, oneDNN primitive creation
    sync()
    best, deadline = float("inf"), time.perf_counter() + seconds
    reps = 10 if device == "cuda" else 1
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2 * size**3 / best
