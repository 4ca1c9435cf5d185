"""Merging an adapter into its base and saving the result as a plain Hugging Face model.

The merge runs in fp32 (``W' = W + scale * B A`` for LoRA; DoRA also rescales each
column to its learned magnitude, Liu et al. 2024), and only the merged weights are
cast to the dtype asked for: merging in bf16 would round the small update ``B A``
away against the large ``W``. A full fine-tune has nothing to merge; its ``model/``
folder is loaded and cast the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ayar.chat.templates import end_of_turn_ids
from ayar.errors import AyarError
from ayar.model.run_folder import RunFolder, load_for_inference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_adapted(run: RunFolder):
    """Load the run's model in fp32 on the CPU, in eval mode, with its tokenizer.

    Returns:
        ``(model, tokenizer)``: a ``PeftModel`` (base + unmerged adapter, on the base with
        any merged ``init_adapter``) for an adapter run, the fine-tuned model for a full run.
        The tokenizer is the one saved in the run (it carries the chat template training
        used). A quantised (QLoRA) run is loaded on its unquantised base: merging into 4-bit
        weights is not meaningful.
    """
    return load_for_inference(run, dtype=torch.float32, device=torch.device("cpu"), quantize=False)


def merge(model):
    """Fold an unmerged adapter into the base weights; a plain model is returned as it is.

    Raises:
        AyarError: the merge produced NaN or infinite weights (``safe_merge`` checks it).
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    try:
        return model.merge_and_unload(safe_merge=True)
    except ValueError as exc:  # peft raises ValueError on non-finite merged weights
        raise AyarError(f"merging the adapter failed: {exc}") from None


def export_dtype(name: str, base_config=None) -> torch.dtype:
    """The dtype to save merged weights in: ``auto`` is the one the base's config declares (fp32 if none).

    Args:
        name: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        base_config: the base model's config as read from its ``config.json`` (needed for ``auto``).

    Raises:
        AyarError: an unknown name.
    """
    if name == "auto":
        declared = getattr(base_config, "dtype", None) or getattr(base_config, "torch_dtype", None)
        if isinstance(declared, str):
            declared = getattr(torch, declared, None)
        return declared if declared in DTYPES.values() else torch.float32
    if name not in DTYPES:
        raise AyarError(f"--dtype: {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def stop_generation_config(model, tokenizer):
    """The model's generation config with every end-of-turn token as a stop token.

    ``eos_token_id`` becomes a list holding the base's EOS ids and
    :func:`ayar.chat.templates.end_of_turn_ids` (a ChatML model ends a turn with
    ``<|im_end|>``, which is not always the tokenizer's EOS), so ``generate`` and
    servers that read ``generation_config.json`` stop where the chat template does.
    """
    config = model.generation_config
    declared = config.eos_token_id
    eos = [declared] if isinstance(declared, int) else list(declared or [])
    for token_id in end_of_turn_ids(tokenizer):
        if token_id not in eos:
            eos.append(token_id)
    config.eos_token_id = eos
    config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    return config


def save_merged(model, tokenizer, folder: str | Path, dtype: torch.dtype, *, max_shard_size: str = "5GB") -> Path:
    """Cast ``model`` to ``dtype`` (in place) and save it with its tokenizer as a Hugging Face folder.

    Args:
        model: a merged (plain) model, fp32.
        tokenizer: saved beside it with its chat template.
        folder: the destination; created if needed.
        dtype: the weights' dtype on disk (``config.json`` records it).
        max_shard_size: largest safetensors shard; bigger models are split with an index file.

    Returns:
        The folder, loadable with ``AutoModelForCausalLM.from_pretrained``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = stop_generation_config(model, tokenizer)
    model.to(dtype)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out)
    return out
