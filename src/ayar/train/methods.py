"""The method registry: what each ``method:`` consumes and how it becomes training examples.

A method is a small record in a plain dict, checked when the recipe loads (a
misspelt method fails at ``ayar check``, not at the first step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.chat.tokenize import EncodedExample, encode_conversation
from ayar.data.read import read_conversations, read_texts
from ayar.errors import AyarError, DataError


@dataclass
class BuildStats:
    """What happened to the records while they became examples (for the run summary)."""

    records: int = 0
    examples: int = 0
    truncated: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0


def sft_examples(path: str, tokenizer, data) -> tuple[list[EncodedExample], BuildStats]:
    """Conversations rendered with the chat template; loss where ``data.loss_on`` says."""
    stats = BuildStats()
    examples = []
    for conv in read_conversations(path):
        stats.records += 1
        try:
            full = encode_conversation(tokenizer, conv.messages, loss_on=data.loss_on)
        except (ValueError, AyarError) as exc:
            raise DataError(conv.source, conv.line, str(exc)) from None
        enc = full
        if len(full.input_ids) > data.max_length:
            stats.truncated += 1
            enc = EncodedExample(full.input_ids[: data.max_length], full.labels[: data.max_length])
        n_targets = sum(1 for t in enc.labels[1:] if t != IGNORE)
        if n_targets == 0:
            stats.dropped_no_target += 1
            continue
        stats.examples += 1
        stats.tokens += len(enc.input_ids)
        stats.target_tokens += n_targets
        examples.append(enc)
    return examples, stats


def pretrain_examples(path: str, tokenizer, data) -> tuple[list[EncodedExample], BuildStats]:
    """Raw documents, each followed by EOS, concatenated and cut into ``max_length`` blocks.

    The final partial block is dropped (it is counted in ``truncated``).
    """
    stats = BuildStats()
    stream: list[int] = []
    eos = tokenizer.eos_token_id
    for doc in read_texts(path, data.text_field):
        stats.records += 1
        stream.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            stream.append(eos)
    size = data.max_length
    n_blocks = len(stream) // size
    if n_blocks == 0:
        raise DataError(path, None, f"only {len(stream)} tokens, fewer than one block of data.max_length={size}",
                        "lower data.max_length or add text")
    if len(stream) % size:
        stats.truncated = 1
    examples = []
    for b in range(n_blocks):
        block = stream[b * size : (b + 1) * size]
        examples.append(EncodedExample(block, list(block)))
    stats.examples = n_blocks
    stats.tokens = n_blocks * size
    stats.target_tokens = n_blocks * (size - 1)
    return examples, stats


@dataclass(frozen=True)
class Method:
    name: str
    record: str  # the record type it reads: "conversation" or "text"
    description: str
    build_examples: Callable[..., tuple[list[EncodedExample], BuildStats]]


METHODS: dict[str, Method] = {
    "pretrain": Method("pretrain", "text", "continued pretraining on raw text blocks", pretrain_examples),
    "sft": Method("sft", "conversation", "supervised fine-tuning on conversations", sft_examples),
}
