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
from pathlib import Path

import torch

from ayar.errors import AyarError
from ayar.train.objectives import Reference


def adapter_folder(target: str) -> Path:
    """The PEFT adapter folder named by ``model.init_adapter`` (a run folder or the adapter itself)."""
    path = Path(target)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise AyarError(f"model.init_adapter: {target} is neither a PEFT adapter folder nor a run folder with "
                    "adapter/ (did that run finish? full fine-tunes are used as model.path instead)")


def start_model(model, recipe):
    """Apply ``model.init_adapter``; returns (model, whether the adapter is already attached)."""
    from peft import PeftModel

    m = recipe.model
    if not m.init_adapter:
        return model, False
    folder = adapter_folder(m.init_adapter)
    earlier = folder.parent / "recipe.yaml"
    if folder.name == "adapter" and earlier.is_file():
        from ayar.recipe import load_recipe

        if load_recipe(earlier).model.init_adapter:
            raise AyarError(f"model.init_adapter: {m.init_adapter} itself started from another adapter; chains of "
                            "init adapters are not supported. Export that run with `ayar export RUN --format merged` "
                            "and use the merged folder as model.path")
    if m.init_adapter_mode == "continue":
        return PeftModel.from_pretrained(model, str(folder), is_trainable=True), True
    if m.quantization != "none":
        raise AyarError("model.init_adapter_mode merge cannot merge into a quantised base; use "
                        "init_adapter_mode: continue (with preference.reference: precompute) or no quantization")
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload(), False


def reference_kind(recipe) -> str:
    """The reference the recipe asks for, with ``auto`` resolved; checked against the adapter setup."""
    kind = recipe.preference.reference
    continuing = bool(recipe.model.init_adapter) and recipe.model.init_adapter_mode == "continue"
    full = recipe.adapter.type == "full"
    if kind == "auto":
        kind = "precompute" if continuing else "copy" if full else "adapter_disabled"
    if kind == "adapter_disabled" and full:
        raise AyarError("preference.reference adapter_disabled needs an adapter; with adapter.type full use copy "
                        "or precompute")
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
    if p.reference_quantization != "none":
        if recipe.model.init_adapter:
            raise AyarError("preference.reference_quantization loads the reference from model.path and cannot "
                            "include model.init_adapter; use precompute instead")
        m = recipe.model
        ref = load_model(m.path, dtype=resolve_dtype(m.dtype, target, full_finetune=False), revision=m.revision,
                         trust_remote_code=m.trust_remote_code, device=target, quantization=p.reference_quantization)
    else:
        ref = copy.deepcopy(model).to(target)
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return Reference("copy", ref)
