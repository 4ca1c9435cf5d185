"""Tiny models for tests and the offline demo.

A tiny model is built exactly like a real one is shipped: a byte-level BPE
tokenizer trained with the ``tokenizers`` library on a local corpus, a chat
template, and random weights from a Llama or Qwen2 config, both written with
``save_pretrained``. It is then loaded through :func:`ayar.model.load.load_model`,
the same code path a Hugging Face model takes. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ayar.chat.templates import get_template
from ayar.errors import AyarError

ARCHS = ("llama", "qwen2")


def round_up(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


def build_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 2048,
    special_tokens: Iterable[str] = (),
    bos_token: str | None = None,
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
    chat_template: str | None = None,
):
    """Train a byte-level BPE tokenizer and wrap it as a ``PreTrainedTokenizerFast``.

    Args:
        texts: the training corpus, one document per item.
        vocab_size: target vocabulary size including special tokens.
        special_tokens: extra tokens that must stay single ids (chat markers).
        bos_token: beginning-of-sequence token, or None for none (as Qwen2).
        eos_token: end-of-sequence token; with ChatML it is also the end of turn.
        pad_token: padding token, kept distinct from ``eos_token`` so that
            padding masks never hide the end-of-turn target.
        chat_template: Jinja source stored as the tokenizer's chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials: list[str] = []
    for tok in (pad_token, eos_token, bos_token, *special_tokens):
        if tok and tok not in specials:
            specials.append(tok)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        additional_special_tokens=[t for t in specials if t not in (pad_token, eos_token, bos_token)],
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def corpus_from_file(path: str | Path) -> list[str]:
    """Texts for tokenizer training: lines of a .txt file, or the text and message
    contents of a JSONL file."""
    from ayar.data.read import iter_jsonl

    path = Path(path)
    if path.suffix != ".jsonl":
        if not path.is_file():
            raise AyarError(f"{path}: corpus file not found")
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = []
    for _, obj in iter_jsonl(path):
        if isinstance(obj.get("text"), str):
            texts.append(obj["text"])
        for message in obj.get("messages") or []:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                texts.append(message["content"])
    return texts


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str],
    *,
    arch: str = "llama",
    template: str = "chatml",
    vocab_size: int = 2048,
    hidden_size: int = 256,
    intermediate_size: int = 512,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_positions: int = 1024,
    init_std: float = 0.02,
    seed: int = 0,
) -> Path:
    """Build a random-weight model and its tokenizer under ``out_dir``.

    Layer sizes must be multiples of 64 (bitsandbytes' CPU 4-bit kernels need it);
    the embedding matrix is padded to a multiple of 64 as well. ``init_std`` is the
    weights' initial standard deviation; note that with tied embeddings and a frozen
    final norm, a random base under LoRA can only produce logits up to about
    ``init_std * hidden_size`` in size, so adapter-only tests on an untrained tiny
    model want a larger value (or a pretraining stage first, as the demo does).

    Returns:
        The folder, loadable with ``from_pretrained``.

    Raises:
        AyarError: unknown architecture or a size that is not a multiple of 64.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, Qwen2Config

    if arch not in ARCHS:
        raise AyarError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    for name, value in (("hidden_size", hidden_size), ("intermediate_size", intermediate_size)):
        if value % 64:
            raise AyarError(f"{name} must be a multiple of 64, got {value}")
    if hidden_size % num_heads:
        raise AyarError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")

    chat = get_template(template)
    tokenizer = build_tokenizer(
        corpus,
        vocab_size=vocab_size,
        special_tokens=chat.special_tokens,
        bos_token=chat.bos,
        eos_token=chat.end_of_turn,
        chat_template=chat.source,
    )
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(
        vocab_size=round_up(len(tokenizer)),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids(chat.end_of_turn)],
        pad_token_id=tokenizer.pad_token_id,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
