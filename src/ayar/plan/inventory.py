"""What a model is made of, read without loading a single weight.

Shapes and dtypes come from the safetensors headers (the first ``8 + N`` bytes
of each file: a little-endian u64 ``N`` and ``N`` bytes of JSON); sizes such as
layers, heads and vocabulary come from ``config.json``. A folder holding only
``config.json`` (no weights yet) is described from the configuration alone,
for Llama-family decoders (Llama, Qwen2, Mistral, Gemma 3).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import AyarError

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
HEADER_LIMIT = 100 * 2**20  # a header larger than this is not a safetensors file


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "BF16"

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def kind(self) -> str:
        """embedding, head, linear (a 2-D weight inside the decoder blocks), norm or bias."""
        if "embed_tokens" in self.name or self.name.endswith("wte.weight"):
            return "embedding"
        if self.name.startswith("lm_head") or ".lm_head." in self.name:
            return "head"
        if len(self.shape) == 2 and self.name.endswith(".weight"):
            return "linear"
        return "bias" if self.name.endswith(".bias") else "norm"

    @property
    def module(self) -> str:
        """The module's last name component, e.g. ``q_proj`` (what LoRA target lists name)."""
        parts = self.name.rsplit(".", 2)
        return parts[-2] if len(parts) >= 2 else self.name


@dataclass(frozen=True)
class Dims:
    """The sizes the activation and FLOP formulas need."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    model_type: str
    attention: str = "sdpa"

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim


@dataclass
class Inventory:
    """Every parameter tensor of a model (deduplicated as ``model.parameters()`` is) and its sizes."""

    dims: Dims
    tensors: list[Tensor] = field(default_factory=list)
    file_bytes: int = 0  # bytes of the weight files on disk (0: described from config alone)
    source: str = "safetensors headers"

    @property
    def total(self) -> int:
        return sum(t.numel for t in self.tensors)

    def of_kind(self, *kinds: str) -> list[Tensor]:
        return [t for t in self.tensors if t.kind in kinds]


def read_header(path: Path) -> dict:
    """The JSON header of one safetensors file; reads ``8 + N`` bytes and nothing more.

    Raises:
        AyarError: the file is not a safetensors file.
    """
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise AyarError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", raw)
        if size > HEADER_LIMIT:
            raise AyarError(f"{path}: not a safetensors file (header length {size})")
        body = fh.read(size)
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AyarError(f"{path}: not a safetensors file (header is not JSON)") from None
    header.pop("__metadata__", None)
    return header


def weight_files(folder: Path) -> list[Path]:
    """The model's safetensors files, per its index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [folder / n for n in names]
    return sorted(folder.glob("*.safetensors"))


def _text_config(folder: Path, key: str = "model.path") -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise AyarError(f"{key}: {folder} has no config.json; `ayar plan` needs the model's config (and its "
                        "tokenizer) in a local folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    text = config.get("text_config") or {}
    return {**config, **text}


def dims_from_config(config: dict) -> Dims:
    """Layer sizes from a (text) config dict.

    Raises:
        AyarError: the config lacks a decoder size this planner needs.
    """
    try:
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        dims = Dims(
            hidden=hidden, layers=config["num_hidden_layers"], heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or hidden // heads,
            intermediate=config["intermediate_size"], vocab=config["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", True)), model_type=config.get("model_type", "?"),
            attention=config.get("_attn_implementation") or config.get("attn_implementation") or "sdpa",
        )
    except KeyError as exc:
        raise AyarError(f"config.json: no {exc.args[0]}; `ayar plan` knows decoder-only transformers with "
                        "hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size") from None
    return dims


def tensors_from_config(dims: Dims, config: dict, dtype: str = "BF16") -> list[Tensor]:
    """The parameter tensors of a Llama-family decoder, derived from its config alone.

    Per layer: q, k, v, o projections (Qwen2 adds q/k/v biases; Gemma 3 adds q/k
    norms and two extra layer norms), gate/up/down MLP, two RMSNorms.
    """
    h, q, kv, i = dims.hidden, dims.q_dim, dims.kv_dim, dims.intermediate
    out = [Tensor("model.embed_tokens.weight", (dims.vocab, h), dtype)]
    gemma = dims.model_type.startswith("gemma")
    bias = config.get("attention_bias", dims.model_type == "qwen2")
    for n in range(dims.layers):
        p = f"model.layers.{n}."
        out += [Tensor(p + "self_attn.q_proj.weight", (q, h), dtype), Tensor(p + "self_attn.k_proj.weight", (kv, h), dtype),
                Tensor(p + "self_attn.v_proj.weight", (kv, h), dtype), Tensor(p + "self_attn.o_proj.weight", (h, q), dtype),
                Tensor(p + "mlp.gate_proj.weight", (i, h), dtype), Tensor(p + "mlp.up_proj.weight", (i, h), dtype),
                Tensor(p + "mlp.down_proj.weight", (h, i), dtype),
                Tensor(p + "input_layernorm.weight", (h,), dtype), Tensor(p + "post_attention_layernorm.weight", (h,), dtype)]
        if bias:
            out += [Tensor(p + f"self_attn.{m}_proj.bias", (d,), dtype) for m, d in (("q", q), ("k", kv), ("v", kv))]
        if gemma:
            out += [Tensor(p + "self_attn.q_norm.weight", (dims.head_dim,), dtype),
                    Tensor(p + "self_attn.k_norm.weight", (dims.head_dim,), dtype),
                    Tensor(p + "pre_feedforward_layernorm.weight", (h,), dtype),
                    Tensor(p + "post_feedforward_layernorm.weight", (h,), dtype)]
    out.append(Tensor("model.norm.weight", (h,), dtype))
    if not dims.tied:
        out.append(Tensor("lm_head.weight", (dims.vocab, h), dtype))
    return out


def read_inventory(model_path: str, key: str = "model.path") -> Inventory:
    """Describe a local model folder from ``config.json`` and its safetensors headers.

    Args:
        key: the recipe key that names the folder (for error messages), e.g. ``distill.teacher``.

    Raises:
        AyarError: the folder or its config is missing, or a weight file is not safetensors.
    """
    folder = Path(model_path).expanduser()
    if not folder.is_dir():
        raise AyarError(f"{key}: {model_path} is not a local folder; `ayar plan` reads config.json and "
                        f"safetensors headers from a local copy (no download); point {key} at one")
    config = _text_config(folder, key)
    dims = dims_from_config(config)
    files = weight_files(folder)
    if not files:
        return Inventory(dims, tensors_from_config(dims, config, _config_dtype(config)), 0, "config.json only")
    tensors: dict[str, Tensor] = {}
    for path in files:
        for name, info in read_header(path).items():
            tensors[name] = Tensor(name, tuple(info["shape"]), info["dtype"])
    # A checkpoint of a multimodal model also holds a vision tower: keep the language model's tensors.
    kept = [t for t in tensors.values() if not any(s in t.name for s in ("vision_tower", "multi_modal_projector"))]
    if dims.tied:
        kept = [t for t in kept if t.kind != "head"]  # tied: model.parameters() yields the matrix once
    return Inventory(dims, kept, sum(p.stat().st_size for p in files))


def adapter_parameters(folder: Path) -> int:
    """Parameters of a PEFT adapter folder, from its safetensors header (0 when it has none)."""
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        return 0
    return sum(Tensor(name, tuple(info["shape"]), info["dtype"]).numel for name, info in read_header(path).items())


def _config_dtype(config: dict) -> str:
    name = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    return {"float32": "F32", "float16": "F16"}.get(name, "BF16")


def lora_targets(inv: Inventory, target_modules) -> list[Tensor]:
    """The linear weights that get a LoRA adapter, as peft chooses them.

    ``all-linear`` is every linear layer except the output layer; a list names
    modules by their last name component (``q_proj``).
    """
    linear = inv.of_kind("linear")
    if target_modules == "all-linear":
        return linear
    wanted = set(target_modules)
    return [t for t in linear if t.module in wanted]


def trainable_parameters(inv: Inventory, adapter) -> int:
    """Trainable parameters for an ``adapter`` section (equal to peft's count).

    LoRA adds ``A: (r, in)`` and ``B: (out, r)`` per target; DoRA also a magnitude
    vector of ``out`` entries; full fine-tuning trains everything.
    """
    if adapter.type == "full":
        return inv.total
    n = 0
    for t in lora_targets(inv, adapter.target_modules):
        out_f, in_f = t.shape
        n += adapter.r * (in_f + out_f) + (out_f if adapter.type == "dora" else 0)
    return n
