"""load_model: what every loaded model gets, whatever stage loads it."""

from __future__ import annotations

import torch
from torch.profiler import profile

from ayar.model.load import load_model


def _ops(fn) -> set[str]:
    with profile(record_shapes=True) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_a_frozen_head_scores_kept_positions_with_one_matmul_not_a_copied_weight(tiny_llama):
    """Generation's prefill feeds the head ``hidden[:, -1:, :]``, a non-contiguous slice. With frozen
    weights, plain torch expands the head's weight to a batch and copies it (the cause of Gemma's
    tenfold slower prefill, bench/lora_slowdown.py); the loaded model multiplies once instead."""
    model = load_model(str(tiny_llama)).eval().requires_grad_(False)
    head = model.get_output_embeddings()
    hidden = torch.randn(4, 9, head.in_features)
    kept = hidden[:, -1:, :]
    assert not kept.is_contiguous()
    with torch.no_grad():
        ops = _ops(lambda: head(kept))
        expected = hidden[:, -1, :] @ head.weight.T
        assert torch.allclose(head(kept)[:, 0], expected, atol=1e-5)
    assert "aten::bmm" not in ops


def test_the_contiguous_head_hook_is_put_on_once(tiny_llama):
    from ayar.model.load import contiguous_head_input

    model = load_model(str(tiny_llama))
    contiguous_head_input(model)
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 1
