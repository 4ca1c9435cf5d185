"""A Hugging Face byte-level BPE tokenizer as GGUF metadata, the way llama.cpp reads it.

llama.cpp's ``gpt2`` tokenizer model is byte-level BPE: the token strings are the
byte-to-unicode forms HF stores (``Ġ`` for a space), merges are ``"left right"``
strings in rank order, and special tokens are typed CONTROL so that they are
matched whole in text. What llama.cpp cannot read from the file is the
pre-tokenizer's regular expression: it picks a built-in one by the name in
``tokenizer.ggml.pre``. :func:`llama_cpp_pre_tokenizer` maps the HF
pre-tokenizer to that name; export verification then checks that both tokenise
a set of texts identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from gguf import TokenType

from ayar.errors import AyarError

# ByteLevel with its built-in GPT-2 regex (what ayar's tiny tokenizers use) -> llama.cpp "gpt-2".
_GPT2_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}

# Split regexes of widely used byte-level tokenizers (from their tokenizer.json) -> llama.cpp names.
_SPLIT_PATTERNS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+": "llama-bpe",  # Llama 3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+": "qwen2",  # Qwen2 / Qwen2.5
}


@dataclass
class GGUFVocab:
    """Everything ``tokenizer.ggml.*`` holds.

    ``tokens`` and ``token_types`` have one entry per row of the embedding matrix:
    ids the tokenizer does not use (the matrix is padded to a multiple of 64) get a
    ``[PAD<id>]`` placeholder typed UNUSED, which llama.cpp never produces.
    """

    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    add_bos: bool


def tokenizer_json(tokenizer) -> dict:
    """The fast tokenizer's ``tokenizer.json`` as a dict.

    Raises:
        AyarError: a slow (Python or SentencePiece) tokenizer without a ``tokenizers`` backend.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise AyarError("GGUF export needs a fast tokenizer (tokenizer.json); this model only has a slow one")
    return json.loads(backend.to_str())


def llama_cpp_pre_tokenizer(spec: dict) -> str:
    """The ``tokenizer.ggml.pre`` name whose built-in regex splits text as ``spec`` does.

    Args:
        spec: the ``pre_tokenizer`` entry of ``tokenizer.json``.

    Raises:
        AyarError: a pre-tokenizer llama.cpp has no equivalent for (as far as ayar knows).
    """
    spec = spec or {}
    if {k: spec.get(k) for k in _GPT2_BYTE_LEVEL} == _GPT2_BYTE_LEVEL:
        return "gpt-2"
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else []
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel" \
            and steps[1].get("use_regex") is False:
        name = _SPLIT_PATTERNS.get(steps[0].get("pattern", {}).get("Regex"))
        if name is not None:
            return name
    raise AyarError(
        f"GGUF export: llama.cpp has no pre-tokenizer known to match this tokenizer's ({json.dumps(spec)[:200]}); "
        "supported: GPT-2 byte-level (ayar's tiny models), Llama 3 and Qwen2 tokenizers. Export `merged` instead"
    )


def gguf_vocab(tokenizer, n_vocab: int) -> GGUFVocab:
    """Read ``tokenizer`` into GGUF vocabulary metadata for an embedding matrix of ``n_vocab`` rows.

    Raises:
        AyarError: the tokenizer is not byte-level BPE, or has more tokens than the embedding has rows.
    """
    spec = tokenizer_json(tokenizer)
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise AyarError(f"GGUF export supports byte-level BPE tokenizers only; this one is {model.get('type')} "
                        f"(byte_fallback={model.get('byte_fallback')}); export `merged` instead")
    normalizer = (spec.get("normalizer") or {}).get("type")
    if normalizer not in (None, "NFC"):  # NFC: Qwen2; llama.cpp skips it, which only matters for non-NFC input
        raise AyarError(f"GGUF export: llama.cpp cannot apply this tokenizer's {normalizer} normalizer; "
                        "export `merged` instead")
    pre = llama_cpp_pre_tokenizer(spec.get("pre_tokenizer"))
    ids = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)  # {token: id}
    if max(ids.values()) >= n_vocab:
        raise AyarError(f"the tokenizer has ids up to {max(ids.values())} but the embedding has only {n_vocab} rows")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [int(TokenType.UNUSED)] * n_vocab
    for token, token_id in ids.items():
        tokens[token_id], types[token_id] = token, int(TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        types[added["id"]] = int(TokenType.CONTROL if added.get("special") else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and tokenizer("a")["input_ids"][:1] == [bos]
    return GGUFVocab(pre=pre, tokens=tokens, token_types=types, merges=merges, bos_id=bos,
                     eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, add_bos=adds_bos)
