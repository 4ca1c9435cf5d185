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


def resolve_dtype(name: str, device: torch.device, *, full_finetune: bool = False,
                  autocast: torch.dtype | None = torch.bfloat16) -> torch.dtype:
    """Weight dtype for ``model.dtype``.

    ``auto`` is bf16 for a frozen base under an adapter when the device supports
    it and training autocasts to bf16: autocast would cast every frozen fp32
    weight to bf16 at every matmul of every step anyway, so storing it in bf16
    saves those casts and half the memory (tests/train/test_frozen_dtype.py
    bounds the difference). fp32 for full fine-tuning (AdamW on bf16 weights
    loses small updates) and for fp32 training.
    """
    if name != "auto":
        return DTYPES[name]
    if not full_finetune and autocast == torch.bfloat16 and bf16_supported(device):
        return torch.bfloat16
    return torch.float32


def check_source(path: str) -> None:
    """Raise a clear error for a local-looking model path that is not a folder (no network is touched)."""
    looks_local = path.startswith((".", "/", "~")) or Path(path).exists()
    if looks_local and not Path(path).expanduser().is_dir():
        raise AyarError(f"model.path: folder {path} does not exist; build a tiny one with `ayar model tiny`")


def load_tokenizer(path: str, *, chat_template: str | None = None, revision: str | None = None,
                   trust_remote_code: bool = False, config=None):
    """Load a tokenizer and make sure it can render conversations.

    Args:
        path: hub id or local folder.
        chat_template: bundled template name or .jinja path, replacing the tokenizer's own.
        config: the model's config, for a folder without ``config.json`` (an adapter): transformers
            picks some tokenizer classes by model type, so the tokenizer then behaves as beside its model.

    Raises:
        AyarError: the model cannot be found, or it has no chat template and none was named.
    """
    from transformers import AutoTokenizer

    check_source(path)
    try:
        extra = {"config": config} if config is not None else {}
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code,
                                                  **extra)
    except (OSError, ValueError) as exc:
        raise AyarError(f"model.path: cannot load a tokenizer from {path!r}: {_first_line(exc)}") from None
    apply_template(tokenizer, chat_template)
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any id works;
        # prefer a dedicated token so the end-of-turn target is never confused with padding.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def quantization_config(kind: str, compute_dtype: torch.dtype):
    """bitsandbytes settings for ``model.quantization``.

    nf4 is QLoRA's recipe (Dettmers et al. 2023): 4-bit NormalFloat weights, double
    quantisation of the scaling constants, matmuls in ``compute_dtype``.

    Raises:
        AyarError: bitsandbytes is not installed.
    """
    if kind == "none":
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise AyarError(f"model.quantization: {kind} needs bitsandbytes; install it with "
                        "`pip install bitsandbytes`, or set model.quantization: none") from None
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def load_model(path: str, *, dtype: torch.dtype = torch.float32, revision: str | None = None,
               trust_remote_code: bool = False, device: torch.device | None = None, quantization: str = "none"):
    """Load a causal language model from safetensors weights, optionally quantised.

    Raises:
        AyarError: the model cannot be found, has no safetensors weights, or cannot be quantised.
    """
    from transformers import AutoModelForCausalLM

    check_source(path)
    quant = quantization_config(quantization, dtype)
    extra = {"quantization_config": quant, "device_map": {"": device or "cpu"}} if quant else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, revision=revision, trust_remote_code=trust_remote_code, use_safetensors=True,
            **extra,
        )
    except (OSError, ValueError) as exc:
        raise AyarError(f"model.path: cannot load a model from {path!r}: {_first_line(exc)}") from None
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        # Norms and the output layer to fp32, inputs that require grad: what k-bit training needs.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    elif device is not None:
        model.to(device)
    contiguous_head_input(model)
    return model


def contiguous_head_input(model) -> None:
    """Make the output head's input contiguous before its matmul.

    transformers slices the final hidden states before the head (``logits_to_keep``:
    generation's prefill, ``hidden[:, -1:, :]``). For such a non-contiguous 3-D input
    and a weight that does not require grad (any frozen or adapter-trained model),
    ``torch.matmul`` does not fold the batch into one ``mm``: it expands the weight to
    a batch and copies it (batch x vocab x hidden: 2.7 GB for Gemma 3's 262k-token head
    at batch 8) and runs ``bmm``. Measured on this 2-core CPU, batch 8 x 154 tokens:
    the prefill took 6.5 s instead of 0.7 s (``bench/lora_slowdown.py``; upstream:
    pytorch/pytorch#186148 and #166891). A copy of the kept positions costs nothing
    by comparison.
    """
    import torch

    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Module) or getattr(head, "_ayar_contiguous_input", False):
        return

    def contiguous(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 2 and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    head.register_forward_pre_hook(contiguous)
    head._ayar_contiguous_input = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
