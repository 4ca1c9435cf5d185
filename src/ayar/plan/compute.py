"""FLOPs of a training step and the time they take on a device.

Forward FLOPs of one micro-batch of ``rows x seq`` (padded) tokens:

- decoder blocks: ``2 N_blocks`` per token (``N_blocks``: linear weights in the layers);
- attention scores and values: ``2 x 2 x q_dim x seq / 2`` per token and layer (causal: half the pairs);
- loss head: ``2 h V`` per *target position* only (ayar projects only those);
- LoRA: ``2 x adapter parameters`` per token.

Backward costs twice the forward for trainable weights (input and weight
gradients), once for frozen ones (input gradients only; attention has no
weights, so always twice). Gradient checkpointing adds one forward of the
blocks; a reference model (DPO/KTO, not precomputed) one forward without
backward; a distillation teacher its own forward (:func:`forward_flops` of its
sizes) on every micro-batch, or once over the data when precomputed. Time is FLOPs / (peak x MFU) plus a fixed cost per micro-batch and
layer and per trainable parameter at each optimizer step, all three from
calibration (:mod:`ayar.plan.calibrate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ayar.plan.inventory import Inventory


@dataclass(frozen=True)
class Work:
    """What one micro-batch runs, beyond its shape."""

    full: bool  # every weight trainable
    adapter_params: int  # trainable adapter parameters (0 for full fine-tuning)
    checkpointing: bool
    reference_forward: bool  # a reference forward over the same rows each step
    no_grad_share: float = 0.0  # share of rows run forward only (KTO's KL rows)


def block_params(inv: Inventory) -> int:
    return sum(t.numel for t in inv.of_kind("linear"))


def forward_flops(inv: Inventory, tokens: float, seq: float, targets: float) -> float:
    """FLOPs of one forward without gradient over ``tokens`` tokens in rows of ``seq``, projecting ``targets``."""
    d = inv.dims
    return 2.0 * block_params(inv) * tokens + 2.0 * d.layers * d.q_dim * seq * tokens + 2.0 * d.hidden * d.vocab * targets


def micro_batch_flops(inv: Inventory, rows: int, seq: int, targets: int, w: Work) -> float:
    """FLOPs (multiply-adds x 2) of one micro-batch's forward and backward."""
    d = inv.dims
    tokens = rows * seq
    blocks = 2.0 * block_params(inv) * tokens
    attention = 2.0 * d.layers * d.q_dim * seq * tokens
    head = 2.0 * d.hidden * d.vocab * targets
    lora = 2.0 * w.adapter_params * tokens
    grad_share = 1.0 - w.no_grad_share
    backward_weights = (2.0 if w.full else 1.0) * grad_share
    total = (blocks + head) * (1 + backward_weights) + attention * (1 + 2 * grad_share) + lora * (1 + 2 * grad_share)
    if w.checkpointing:
        total += (blocks + attention + lora) * grad_share
    if w.reference_forward:
        total += forward_flops(inv, tokens, seq, targets)  # blocks + attention + head
    return total


def useful_flops(inv: Inventory, real_tokens: float, targets: float, w: Work) -> float:
    """FLOPs of the unpadded tokens without recomputation: the numerator of MFU."""
    d = inv.dims
    blocks = 2.0 * block_params(inv) * real_tokens
    head = 2.0 * d.hidden * d.vocab * targets
    return (blocks + head) * (3.0 if w.full else 2.0) + 2.0 * w.adapter_params * real_tokens * 3


def step_seconds(flops: float, micro_batches: int, layers: int, trainable: int, peak_flops: float, mfu: float,
                 overhead_s: float, optimizer_s_per_param: float) -> float:
    """Seconds for ``micro_batches`` micro-batches totalling ``flops``, and their optimizer steps' share."""
    return flops / (peak_flops * mfu) + overhead_s * micro_batches * layers + optimizer_s_per_param * trainable
