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


def pair_examples(path: str, tokenizer, recipe):
    """Preference pairs, cut and filtered per ``preference`` (see :mod:`ayar.train.preference_data`)."""
    from ayar.train.preference_data import read_pairs

    p = recipe.preference
    return read_pairs(path, tokenizer, recipe.data.max_length, p.max_prompt_length, p.bad_pairs)


def kto_examples(path: str, tokenizer, recipe):
    """Rated replies, each with a mismatched completion for KTO's KL estimate."""
    from ayar.train.preference_data import read_kto

    p = recipe.preference
    return read_kto(path, tokenizer, recipe.data.max_length, p.max_prompt_length, p.bad_pairs, recipe.train.seed)


@dataclass(frozen=True)
class Method:
    name: str
    record: str  # the record type it reads: "conversation", "text", "preference" or "kto"
    description: str
    build_examples: Callable  # (path, tokenizer, recipe) -> (examples, stats)
    reference: bool = False  # needs a reference model
    teacher: bool = False  # needs a teacher model (distill.teacher)


METHODS: dict[str, Method] = {
    "pretrain": Method("pretrain", "text", "continued pretraining on raw text blocks",
                       lambda path, tok, recipe: pretrain_examples(path, tok, recipe.data)),
    "sft": Method("sft", "conversation", "supervised fine-tuning on conversations",
                  lambda path, tok, recipe: sft_examples(path, tok, recipe.data)),
    "dpo": Method("dpo", "preference", "direct preference optimisation (and IPO, hinge, robust)", pair_examples,
                  reference=True),
    "orpo": Method("orpo", "preference", "odds-ratio preference optimisation: SFT and preference in one stage",
                   pair_examples),
    "cpo": Method("cpo", "preference", "contrastive preference optimisation (reference-free)", pair_examples),
    "simpo": Method("simpo", "preference", "simple preference optimisation (length-normalised, reference-free)",
                    pair_examples),
    "kto": Method("kto", "kto", "Kahneman-Tversky optimisation on thumbs-up / thumbs-down replies", kto_examples,
                  reference=True),
    "distill": Method("distill", "conversation", "logit distillation: forward KL to a local teacher's distributions",
                      lambda path, tok, recipe: sft_examples(path, tok, recipe.data), teacher=True),
}
