"""Writing a merged Llama or Qwen2 model as a GGUF file with the ``gguf`` package: the fallback writer.

GGUF export normally goes through llama.cpp's own converter (:mod:`ayar.export.gguf`).
This writer is used only when that converter refuses the tokenizer because it does
not know its BPE pre-tokenizer (a custom vocabulary, ayar's tiny models): it
recognises the pre-tokenizer from ``tokenizer.json`` instead (:mod:`ayar.export.gguf_vocab`).

Tensors keep their Hugging Face shape (GGUF stores dimensions innermost first, and
``GGUFWriter`` reverses numpy's order itself); names come from ``gguf``'s own
HF-to-GGUF name map. Three facts about llama.cpp shape the conversion:

- RoPE layout. HF Llama rotates dimension ``i`` of a head with ``i + d/2``
  ("rotate half"); llama.cpp's ``llama`` architecture uses the original RoPE
  pairing of ``2i`` with ``2i+1``. The rows of ``q_proj`` and ``k_proj`` are
  therefore reordered per head (:func:`interleave_rope_rows`). llama.cpp runs
  ``qwen2`` with the rotate-half ("NEOX") rope, so Qwen2 needs no reordering.
- RoPE scaling. Llama 3.1+'s ``llama3`` scaling (and ``linear``) only rescale the
  rotation frequencies; they are written as the ``rope_freqs`` tensor llama.cpp
  divides them by (:func:`rope_freq_factors`).
- Types. 1-D tensors (norms, biases, ``rope_freqs``) stay f32 in every file type, as llama.cpp's
  own files do; Q8_0 packs rows in blocks of 32, so a matrix whose rows are not
  a multiple of 32 long falls back to f16.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from ayar import __version__
from ayar.errors import AyarError
from ayar.export.gguf_vocab import GGUFVocab


@dataclass(frozen=True)
class GGUFType:
    """A GGUF file type: the type of 2-D tensors and the ``general.file_type`` it declares."""

    matrix: gguf.GGMLQuantizationType
    file_type: gguf.LlamaFileType


GGUF_TYPES = {
    "f32": GGUFType(gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": GGUFType(gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": GGUFType(gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": GGUFType(gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

# HF model_type -> (GGUF architecture, whether q/k rows need the rotate-half -> interleaved reordering).
ARCHITECTURES = {
    "llama": (gguf.MODEL_ARCH.LLAMA, True),
    "qwen2": (gguf.MODEL_ARCH.QWEN2, False),
}


def interleave_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection from HF's rotate-half RoPE layout to interleaved pairs.

    Within each head of ``d`` rows, HF rotates row ``i`` together with row ``i + d/2``;
    llama.cpp's ``llama`` rope rotates rows ``2i`` and ``2i+1``. The new order of a
    head is ``0, d/2, 1, d/2+1, ...``: e.g. rows ``[0, 1, 2, 3]`` become ``[0, 2, 1, 3]``.

    Args:
        weight: ``(n_heads * d, ...)``: a weight matrix or a bias vector.
        n_heads: heads in this projection (key/value heads for ``k_proj``).
    """
    d = weight.shape[0] // n_heads
    rest = weight.shape[1:]
    # (heads, half, d/2, ...) -> (heads, d/2, half, ...): row (h, half, i) moves to position 2i + half.
    return weight.reshape(n_heads, 2, d // 2, *rest).swapaxes(1, 2).reshape(weight.shape)


def gguf_tensors(state_dict: dict, config) -> Iterator[tuple[str, np.ndarray]]:
    """``(GGUF name, fp32 array)`` for every weight of a merged HF model, reordered as llama.cpp expects.

    ``lm_head.weight`` is left out when the embeddings are tied: llama.cpp reuses
    ``token_embd.weight`` when ``output.weight`` is absent. A scaled RoPE adds ``rope_freqs.weight``.

    Raises:
        AyarError: an architecture other than Llama / Qwen2, or a tensor with no GGUF name.
    """
    arch, permute = architecture(config)
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    unknown = []
    for hf_name, tensor in state_dict.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            unknown.append(hf_name)
            continue
        array = tensor.detach().float().cpu().numpy()
        if permute and ".self_attn.q_proj." in hf_name:
            array = interleave_rope_rows(array, n_heads)
        elif permute and ".self_attn.k_proj." in hf_name:
            array = interleave_rope_rows(array, n_kv)
        yield name, np.ascontiguousarray(array)
    if unknown:
        raise AyarError(f"GGUF export: no GGUF name for tensor(s) {', '.join(unknown[:5])}")
    factors = rope_freq_factors(config)
    if factors is not None:
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", factors


def architecture(config) -> tuple[gguf.MODEL_ARCH, bool]:
    """(GGUF architecture, permute q/k) of an HF config.

    Raises:
        AyarError: not a Llama or Qwen2 model.
    """
    if config.model_type not in ARCHITECTURES:
        raise AyarError(f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is "
                        f"{config.model_type!r}. Export `merged` and convert it with llama.cpp instead")
    return ARCHITECTURES[config.model_type]


def encode_tensor(array: np.ndarray, gguf_type: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The bytes (or float array) to store for one tensor, and their GGML type."""
    target = GGUF_TYPES[gguf_type].matrix
    if array.ndim < 2 or target == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32), gguf.GGMLQuantizationType.F32
    if target == gguf.GGMLQuantizationType.Q8_0 and array.shape[-1] % 32:
        target = gguf.GGMLQuantizationType.F16  # Q8_0 blocks are 32 values of one row
    if target == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16), target
    return gguf.quants.quantize(array, target), target


def _rope_parameters(config) -> dict:
    """The RoPE settings of a transformers 5 config (``rope_parameters``) or an older one (``rope_scaling``)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def rope_theta(config) -> float:
    return float(_rope_parameters(config)["rope_theta"])


def rope_freq_factors(config) -> np.ndarray | None:
    """Per-frequency divisors of a Llama model with ``linear`` or ``llama3`` (Llama 3.1+) RoPE scaling.

    Both scalings only rescale RoPE's inverse frequencies, which llama.cpp reads as a
    ``rope_freqs`` tensor: it rotates pair ``i`` by ``pos * theta**(-2i/d) / factor[i]``.
    The scaled frequencies come from transformers' own RoPE code, so the two agree by
    construction; the factors are ``unscaled / scaled``.

    Returns:
        ``(head_dim / 2,)`` float32 factors, or None for plain RoPE.

    Raises:
        AyarError: a scaling llama.cpp cannot express this way (YaRN, dynamic NTK, ...) or a non-Llama model.
    """
    import torch
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = _rope_parameters(config)
    kind = params["rope_type"]
    if kind == "default":
        return None
    if kind not in ("linear", "llama3") or config.model_type != "llama":
        raise AyarError(f"GGUF export: {config.model_type} with RoPE scaling {kind!r} is not supported; export "
                        "`merged` and convert it with llama.cpp's converter")
    scaled, attention_factor = ROPE_INIT_FUNCTIONS[kind](config, "cpu")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    unscaled = 1.0 / (params["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    if attention_factor != 1.0 or scaled.shape != unscaled.shape:
        raise AyarError(f"GGUF export: RoPE scaling {kind!r} with these settings is not supported")
    return (unscaled / scaled).numpy().astype(np.float32)


def write_hparams(writer: gguf.GGUFWriter, config, n_vocab: int) -> None:
    """The ``{arch}.*`` hyper-parameters llama.cpp reads for Llama and Qwen2."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * config.num_attention_heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(n_vocab)


def write_vocab(writer: gguf.GGUFWriter, vocab: GGUFVocab, chat_template: str | None, eot_id: int | None) -> None:
    """The ``tokenizer.ggml.*`` keys, the end-of-turn id and the chat template."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    if eot_id is not None:
        writer.add_eot_token_id(eot_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)


def write_gguf(path: str | Path, model, vocab: GGUFVocab, *, gguf_type: str, name: str,
               chat_template: str | None, eot_id: int | None) -> Path:
    """Write ``model`` (a merged HF causal LM, fp32) as one GGUF file.

    Args:
        path: the ``.gguf`` file to write.
        model: Llama or Qwen2 model whose ``state_dict`` is converted.
        vocab: from :func:`ayar.export.gguf_vocab.gguf_vocab`.
        gguf_type: ``f32``, ``f16``, ``bf16`` or ``q8_0``.
        name: ``general.name``.
        chat_template: Jinja source stored as ``tokenizer.chat_template``.
        eot_id: the token that ends an assistant turn (``tokenizer.ggml.eot_token_id``).

    Raises:
        AyarError: unknown type, unsupported architecture, RoPE scaling or tensor.
    """
    if gguf_type not in GGUF_TYPES:
        raise AyarError(f"unknown GGUF type {gguf_type!r}; choose from {', '.join(GGUF_TYPES)}")
    config = model.config
    arch, _ = architecture(config)
    n_vocab = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_description(f"exported by ayar {__version__}")
    writer.add_file_type(int(GGUF_TYPES[gguf_type].file_type))
    if gguf_type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_hparams(writer, config, n_vocab)
    write_vocab(writer, vocab, chat_template, eot_id)
    for tensor_name, array in gguf_tensors(model.state_dict(), config):
        data, raw = encode_tensor(array, gguf_type)
        writer.add_tensor(tensor_name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
