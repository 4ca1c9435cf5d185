"""Log-likelihood of reference answers under a local model (for perplexity).

Each prompt + reference is encoded exactly as training encodes a conversation
(:func:`~ayar.chat.tokenize.encode_conversation` with ``loss_on="last_assistant"``):
the targets are the reference's tokens and its end-of-turn token. The loss is
:class:`~ayar.train.losses.TargetLoss`, the one training and ``eval_loss`` use,
so ``log(perplexity)`` of a validation file equals its ``eval_loss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ayar.chat.tokenize import ConversationError, encode_conversation
from ayar.errors import AyarError
from ayar.train.batching import collate
from ayar.train.losses import TargetLoss


@torch.no_grad()
def reference_nll(model, tokenizer, prompts: Sequence[list[dict]], references: Sequence[str], *,
                  ids: Sequence[str] | None = None, max_length: int | None = None) -> list[tuple[float, int]]:
    """Summed negative log-likelihood (nats) and token count of each reference given its prompt.

    Args:
        prompts: message lists ending before the answer.
        references: the expected assistant replies.
        ids: example names for error messages.
        max_length: truncate longer encodings (their cut reference tokens are not scored).

    Returns:
        ``[(nll_sum, n_tokens), ...]``, one per example.

    Raises:
        AyarError: an example cannot be encoded with the chat template.
    """
    loss = TargetLoss(model).eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for k, (prompt, reference) in enumerate(zip(prompts, references, strict=True)):
        messages = [*prompt, {"role": "assistant", "content": reference}]
        try:
            example = encode_conversation(tokenizer, messages, loss_on="last_assistant", max_length=max_length)
        except ConversationError as exc:
            name = ids[k] if ids else f"example {k + 1}"
            raise AyarError(f"{name}: cannot score the reference: {exc}") from None
        # One example per forward pass: no padding, so no attention-mask subtleties across architectures.
        batch = {key: value.to(device) for key, value in collate([example], pad_id).items()}
        total, count = loss(**batch)
        out.append((float(total), int(count)))
    return out
