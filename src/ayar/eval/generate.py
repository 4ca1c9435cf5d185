"""Generation with a base model, base + adapter, or a finished run.

Prompts are rendered with the chat template (the generation prompt appended),
tokenised without adding special tokens again, left-padded into batches, and
decoded until every sequence has produced an end-of-turn token. Models are
loaded by :func:`ayar.model.run_folder.load_for_inference`, re-exported here
beside :func:`generate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ayar.chat.templates import end_of_turn_ids
from ayar.model.run_folder import load_for_inference

__all__ = ["generate", "load_for_inference"]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    stop: Sequence[str] = (),
) -> list[str]:
    """Complete each conversation with one assistant turn.

    Args:
        conversations: message lists ending with a user turn.
        temperature: 0 for greedy decoding, else sampling with ``top_p``.
        seed: seeds sampling, so sampled outputs are reproducible.
        stop: strings that end a reply: generation stops once every reply holds one, and each reply is
            cut before its first.

    Returns:
        The generated replies, decoded without special tokens.
    """
    stops = end_of_turn_ids(tokenizer)
    device = next(model.parameters()).device
    replies: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed + start)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
                "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}),
                **sampling,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return [cut_at_stop(r.lstrip(), stop).strip() for r in replies]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` strings it contains."""
    ends = [i for i in (text.find(s) for s in stop if s) if i != -1]
    return text[: min(ends)] if ends else text
