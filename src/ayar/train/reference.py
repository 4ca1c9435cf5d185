"""Starting point and reference model for a preference stage.

- ``model.init_adapter`` (an earlier run's adapter, e.g. from SFT) is either
  merged into the base before a fresh adapter is attached, or kept and trained
  further (``init_adapter_mode: continue``).
- The reference for DPO and KTO is the model as training starts: with a fresh
  adapter, the policy with its adapter disabled (no second copy); with full
  fine-tuning, a frozen copy; or, with ``preference.reference: precompute``,
  a cache of log-probs computed once before the first step.
"""

from __future__ import annotations

import copy

import torch

from ayar.model.run_folder import adapter_folder, attach_init_adapter
from ayar.train.objectives import Reference


def start_model(model, recipe):
    """Apply ``model.init_adapter``; returns (model, whether the adapter is already attached).

    The recipe's conflicts (a chain of init adapters, merging into a quantised base) were
    reported when it loaded, before any weights (:meth:`ayar.recipe.Recipe.conflicts`,
    :func:`ayar.recipe.file_problems`).
    """
    m = recipe.model
    if not m.init_adapter:
        return model, False
    folder = adapter_folder(m.init_adapter)
    return attach_init_adapter(model, folder, m.init_adapter_mode, trainable=True), m.init_adapter_mode == "continue"


def reference_kind(recipe) -> str:
    """The reference the recipe asks for, with ``auto`` resolved (the recipe checked it fits the adapter)."""
    kind = recipe.preference.reference
    continuing = bool(recipe.model.init_adapter) and recipe.model.init_adapter_mode == "continue"
    full = recipe.adapter.type == "full"
    if kind == "auto":
        kind = "precompute" if continuing else "copy" if full else "adapter_disabled"
    return kind


def make_reference(kind: str, model, recipe, device) -> Reference:
    """The on-the-fly reference (for ``precompute``: the one used for the single pass before training)."""
    from ayar.model.load import load_model, resolve_dtype

    p = recipe.preference
    if kind == "adapter_disabled":
        return Reference("adapter_disabled")
    if kind == "precompute":
        continuing = bool(recipe.model.init_adapter) and recipe.model.init_adapter_mode == "continue"
        fresh_adapter = recipe.adapter.type != "full" and not continuing
        return Reference("adapter_disabled" if fresh_adapter else "policy")
    # copy
    target = torch.device(p.reference_device) if p.reference_device else device
    if p.reference_quantization != "none":  # the recipe made sure there is no init_adapter to include
        m = recipe.model
        ref = load_model(m.path, dtype=resolve_dtype(m.dtype, target, full_finetune=False), revision=m.revision,
                         trust_remote_code=m.trust_remote_code, device=target, quantization=p.reference_quantization)
    else:
        ref = copy.deepcopy(model).to(target)
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return Reference("copy", ref)
