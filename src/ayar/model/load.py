"""Loading base models and tokenizers: local folders or hub ids, safetensors only.

A local folder never touches the network. ``trust_remote_code`` stays off
unless the recipe turns it on. Tiny models made by :mod:`ayar.model.tiny` load
through exactly this path.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ayar.chat.templates import apply_template
from ayar.errors import AyarError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@functools.cache
def cpu_has_bf16() -> bool:
    """True when this CPU computes bf16 matmuls natively (AMX or AVX512-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def resolve_dtype(name: str, device: torch.device, *, full_finetune: bool = False) -> torch.dtype:
    """Weight dtype for ``model.dtype``.

    ``auto`` is bf16 for a frozen base under an adapter when the device supports
    it, and fp32 for full fine-tuning (AdamW on bf16 weights loses small updates).
    """
    if name != "auto":
        return DTYPES[name]
    if not full_finetune and bf16_supported(device):
        return torch.bfloat16
    return torch.float32


def _check_source(path: str) -> None:
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not Path(path).expanduser().is_dir():
        raise AyarError(f"model.path: folder {path} does not exist; build a tiny one with `ayar model tiny`")


def load_tokenizer(path: str, *, chat_template: str | None = None, revision: str | None = None,
                   trust_remote_code: bool = False):
    """Load a tokenizer and make sure it can render conversations.

    Args:
        path: hub id or local folder.
        chat_template: bundled template name or .jinja path, replacing the tokenizer's own.

    Raises:
        AyarError: the model cannot be found, or it has no chat template and none was named.
    """
    from transformers import AutoTokenizer

    _check_source(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise AyarError(f"model.path: cannot load a tokenizer from {path!r}: {_first_line(exc)}") from None
    apply_template(tokenizer, chat_template)
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any id works;
        # prefer a dedicated token so the end-of-turn target is never confused with padding.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_model(path: str, *, dtype: torch.dtype = torch.float32, revision: str | None = None,
               trust_remote_code: bool = False, device: torch.device | None = None):
    """Load a causal language model from safetensors weights.

    Raises:
        AyarError: the model cannot be found or has no safetensors weights.
    """
    from transformers import AutoModelForCausalLM

    _check_source(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        raise AyarError(f"model.path: cannot load a model from {path!r}: {_first_line(exc)}") from None
    if device is not None:
        model.to(device)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
