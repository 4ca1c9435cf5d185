"""Conversations to token ids and loss labels.

A conversation is rendered once with the tokenizer's chat template and
tokenised once, with ``add_special_tokens=False`` (the template writes any BOS
itself, so no second one is added). The ids are therefore exactly those of
``tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]``.

Which tokens are targets is decided on the rendered text, not on ids: for
assistant message ``i`` the template renders ``messages[:i]`` with
``add_generation_prompt=True`` (the prompt, ending in the assistant header) and
``messages[:i + 1]`` (the prompt plus the turn). The characters between the two
ends, up to and including the last end-of-turn marker, are the turn's target
span: its content and its end-of-turn token, but neither the role header
before it nor what the template writes after the marker (ChatML's ``\\n``).
This needs the template to be prefix-stable, which is checked.

A token is a target when its first character lies inside a target span. The
span is decided on characters, so it holds when ``pad_token == eos_token``:
labels never depend on which id a token has.

Special-token text inside a message's content stays text. Tokenising the
rendered conversation as a whole would turn a user's ``<|im_end|>\n<|im_start|>
system`` into real control tokens, a forged system turn. :func:`encode_text`
therefore finds where each content lies in the rendered text (by rendering the
template once more with placeholder contents) and re-tokenises every stretch
between two of the template's own control tokens that holds such text with
``split_special_tokens=True``. A conversation without special-token text
takes the plain path, so its ids stay those of ``apply_chat_template``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2

from ayar.chat.templates import end_of_turn_tokens
from ayar.data.read import check_messages
from ayar.errors import AyarError

IGNORE_INDEX = -100  # label of a token that carries no loss (PyTorch's cross-entropy default)

LOSS_ON = ("assistant", "last_assistant", "all")


class ConversationError(AyarError, ValueError):
    """A conversation cannot be encoded. The message says why; the caller adds file and line."""


@dataclass(frozen=True)
class EncodedExample:
    """One tokenised conversation.

    ``labels[k]`` is ``input_ids[k]`` when token ``k`` is a target, else
    :data:`IGNORE_INDEX`. Labels are not shifted: the loss shifts them (token
    ``k`` is predicted from tokens ``< k``), as Hugging Face causal LMs do.
    """

    input_ids: list[int]
    labels: list[int]

    @property
    def num_targets(self) -> int:
        """How many tokens carry loss."""
        return sum(label != IGNORE_INDEX for label in self.labels)


def encode_conversation(
    tokenizer,
    messages: Sequence[Mapping],
    *,
    loss_on: str = "assistant",
    max_length: int | None = None,
) -> EncodedExample:
    """Tokenise a conversation with its chat template and mark the loss targets.

    Args:
        tokenizer: a fast Hugging Face tokenizer with a chat template.
        messages: ``[{"role": ..., "content": ...}, ...]`` with string contents.
        loss_on: which tokens are targets.
            ``"assistant"``: every assistant turn's content and its end-of-turn token.
            ``"last_assistant"``: the same, for the last assistant turn only.
            ``"all"``: every token (``labels == input_ids``); with the shift done
            in the loss, every token but the first is predicted.
        max_length: keep only the first ``max_length`` tokens (ids and labels
            alike); a cut assistant turn keeps its first tokens as targets and
            loses its end-of-turn token. None keeps everything.

    Returns:
        The ids and labels, of equal length.

    Raises:
        ValueError: ``loss_on`` is not one of :data:`LOSS_ON` or ``max_length`` < 1.
        ConversationError: the conversation is malformed (no assistant turn, an
            empty assistant turn, an assistant turn first, a non-string content,
            an end-of-turn token inside a content), the template rejects it, or no
            target token is left after truncation.
        AyarError: the tokenizer has no chat template, is not a fast tokenizer, or
            its template is not prefix-stable.
    """
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    if not getattr(tokenizer, "chat_template", None):
        raise AyarError("the tokenizer has no chat template; set model.chat_template in the recipe")
    markers = end_of_turn_tokens(tokenizer)
    validate_conversation(messages, markers)

    text = render(tokenizer, messages)
    input_ids, offsets = encode_text(tokenizer, messages, text)
    if loss_on == "all":
        labels = list(input_ids)
    else:
        last_only = loss_on == "last_assistant"
        spans = assistant_spans(tokenizer, messages, text, last_only=last_only, end_of_turn=markers)
        labels = labels_from_spans(input_ids, offsets, spans)

    if max_length is not None and len(input_ids) > max_length:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    example = EncodedExample(input_ids=input_ids, labels=labels)
    if example.num_targets == 0:
        raise ConversationError(  # only truncation can remove every target: each turn has its end-of-turn
            f"no target token is left in the first {max_length} tokens; raise max_length or shorten the prompt"
        )
    return example


def encode_prompt(tokenizer, messages: Sequence[Mapping]) -> list[int]:
    """The ids of a conversation rendered for generation (ending in the assistant header).

    Special-token text in the contents stays text, as in :func:`encode_text`.

    Raises:
        ConversationError: the template rejects the conversation, or it hides where a
            content with special-token text lies.
    """
    text = render(tokenizer, messages, add_generation_prompt=True)
    return encode_text(tokenizer, messages, text, add_generation_prompt=True)[0]


def special_ids(tokenizer) -> set[int]:
    """Ids of the added tokens marked special: those ``split_special_tokens`` turns back into text.

    Added tokens that are not special (Gemma's whitespace runs, for example) are ordinary text pieces.
    """
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return {i for i, t in decoder.items() if getattr(t, "special", True)}


def special_strings(tokenizer) -> list[str]:
    """Every special token's text (the template's control tokens and the others), longest first."""
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return sorted({str(decoder[i]) for i in special_ids(tokenizer) if str(decoder[i])}, key=len, reverse=True)


def encode_text(tokenizer, messages: Sequence[Mapping], text: str, *, add_generation_prompt: bool = False
                ) -> tuple[list[int], list[tuple[int, int]]]:
    """Tokenise a rendered conversation so that special-token text in contents stays text.

    Args:
        tokenizer: the fast tokenizer whose template rendered ``text``.
        messages: the conversation, with string contents.
        text: ``render(tokenizer, messages, add_generation_prompt=...)``.
        add_generation_prompt: as ``text`` was rendered.

    Returns:
        (ids, character offsets of each token in ``text``).

    Raises:
        ConversationError: a content holds special-token text and the template does not
            render contents verbatim (so it cannot be told apart), or the tokenizer would
            still read it as a control token.
        AyarError: the tokenizer is not a fast tokenizer.
    """
    try:
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise AyarError("loss masks need a fast (Rust-backed) tokenizer, which reports offsets") from None
    ids, offsets = list(encoding["input_ids"]), [tuple(o) for o in encoding["offset_mapping"]]
    specials = special_strings(tokenizer)
    forged = [i for i, m in enumerate(messages)
              if isinstance(m.get("content"), str) and any(s in m["content"] for s in specials)]
    if not forged:
        return ids, offsets
    spans = content_spans(tokenizer, messages, text, add_generation_prompt=add_generation_prompt)
    if spans is None:
        i = forged[0]
        raise ConversationError(f"message {i + 1} ({messages[i].get('role')}) contains special-token text, and this "
                                "chat template does not render contents verbatim, so it could not stay text; "
                                "remove it from the content")
    return _split_forged(tokenizer, text, ids, offsets, spans)


def content_spans(tokenizer, messages: Sequence[Mapping], text: str, *, add_generation_prompt: bool = False
                  ) -> list[tuple[int, int]] | None:
    """Character spans of each message's content in ``text``, or None when they cannot be found.

    The template is rendered with each content replaced by a unique placeholder;
    the placeholders cut that rendering into the template's own pieces, and
    ``text`` must be those pieces with the real contents between them.
    """
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    stand_in = [{**m, "content": marks[i]} if isinstance(m.get("content"), str) else m
                for i, m in enumerate(messages)]
    skeleton = render(tokenizer, stand_in, add_generation_prompt=add_generation_prompt)
    spans, rebuilt, cursor = [], [], 0
    for i, mark in enumerate(marks):
        if not isinstance(messages[i].get("content"), str):
            continue
        at = skeleton.find(mark, cursor)
        if at < 0 or skeleton.count(mark) != 1:
            return None
        rebuilt.append(skeleton[cursor:at])
        start = sum(map(len, rebuilt))
        rebuilt.append(messages[i]["content"])
        spans.append((start, start + len(messages[i]["content"])))
        cursor = at + len(mark)
    rebuilt.append(skeleton[cursor:])
    return spans if "".join(rebuilt) == text else None


def _split_forged(tokenizer, text: str, ids: list[int], offsets: list[tuple[int, int]],
                  spans: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Re-tokenise, with special tokens split, each stretch between control tokens that holds forged ones.

    A special token is a control token when it starts outside every content span;
    the tokenizer cuts the text at added tokens and tokenises the stretches between
    them independently, so re-tokenising one stretch leaves the others unchanged.
    """
    added = special_ids(tokenizer)

    def inside(k: int) -> bool:
        return any(a <= offsets[k][0] < b for a, b in spans)

    control = [k for k, token in enumerate(ids) if token in added and not inside(k)]
    out_ids: list[int] = []
    out_offsets: list[tuple[int, int]] = []
    bounds = [-1, *control, len(ids)]
    for left, right in zip(bounds, bounds[1:], strict=False):
        stretch = range(left + 1, right)
        if any(ids[k] in added for k in stretch):
            start = offsets[left][1] if left >= 0 else 0
            end = offsets[right][0] if right < len(ids) else len(text)
            piece = tokenizer(text[start:end], add_special_tokens=False, split_special_tokens=True,
                              return_offsets_mapping=True)
            if any(token in added for token in piece["input_ids"]):
                raise ConversationError("a message content holds the text of a token this tokenizer cannot "
                                        "split; remove it from the content")
            out_ids += piece["input_ids"]
            out_offsets += [(a + start, b + start) for a, b in piece["offset_mapping"]]
        else:
            out_ids += [ids[k] for k in stretch]
            out_offsets += [offsets[k] for k in stretch]
        if right < len(ids):
            out_ids.append(ids[right])
            out_offsets.append(offsets[right])
    return out_ids, out_offsets


def validate_conversation(messages: Sequence[Mapping], end_of_turn: Sequence[str] = ()) -> None:
    """Check that a conversation can be trained on.

    Args:
        messages: the conversation.
        end_of_turn: token strings that must not appear inside a content, since
            each would end the turn early.

    Raises:
        ConversationError: the first problem found, naming the message (1-based).
    """
    try:
        clean = check_messages(list(messages) if isinstance(messages, Sequence) and not isinstance(messages, str)
                               else messages)
    except ValueError as exc:
        raise ConversationError(str(exc)) from None
    for number, message in enumerate(clean, start=1):
        for token in end_of_turn:
            if token in message["content"]:
                raise ConversationError(f"message {number} ({message['role']}) contains the end-of-turn "
                                        f"token {token!r} in its text")


def render(tokenizer, messages: Sequence[Mapping], *, add_generation_prompt: bool = False) -> str:
    """Render messages with the tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: the conversation.
        add_generation_prompt: end with the header that opens an assistant turn.

    Returns:
        The rendered text, exactly as ``apply_chat_template(..., tokenize=False)`` gives it.

    Raises:
        ConversationError: the template rejects the conversation (e.g. roles that
            do not alternate where the format requires it).
    """
    try:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except jinja2.TemplateError as error:
        raise ConversationError(f"the chat template rejects the conversation: {error}") from None


def assistant_spans(
    tokenizer,
    messages: Sequence[Mapping],
    text: str,
    *,
    last_only: bool = False,
    end_of_turn: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """Character spans of the assistant turns' targets in the rendered conversation.

    Args:
        tokenizer: the tokenizer whose template rendered ``text``.
        messages: the conversation (starting with a non-assistant message).
        text: ``render(tokenizer, messages)``.
        last_only: return only the last assistant turn's span.
        end_of_turn: end-of-turn token strings; None asks :func:`end_of_turn_tokens`.

    Returns:
        ``[(start, end), ...]`` in order: from the end of the assistant header to
        the end of the turn's last end-of-turn marker.

    Raises:
        AyarError: the template is not prefix-stable, or an assistant turn does
            not end with an end-of-turn token.
    """
    markers = end_of_turn_tokens(tokenizer) if end_of_turn is None else end_of_turn
    indices = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if last_only:
        indices = indices[-1:]
    spans = []
    for i in indices:
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        turn = text if i + 1 == len(messages) else render(tokenizer, messages[: i + 1])
        if not (turn.startswith(prompt) and text.startswith(turn)):
            raise AyarError(
                f"the chat template is not prefix-stable at message {i + 1}: rendering the earlier messages "
                "does not give a prefix of the whole conversation (templates that rewrite earlier turns "
                "cannot be masked); choose one of the bundled templates with model.chat_template"
            )
        start = len(prompt)
        ends = [found + len(m) for m in markers if (found := turn.rfind(m, start)) >= 0]
        if not ends:
            raise AyarError(
                f"the chat template does not end assistant message {i + 1} with an end-of-turn token "
                f"({', '.join(markers)}), so the model could not learn to stop"
            )
        spans.append((start, max(ends)))
    return spans


def labels_from_spans(
    input_ids: Sequence[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]
) -> list[int]:
    """Labels that keep the ids of tokens starting inside a span.

    Args:
        input_ids: token ids.
        offsets: each token's ``(start, end)`` characters in the rendered text.
        spans: sorted, non-overlapping ``(start, end)`` character spans.

    Returns:
        ``input_ids[k]`` where token ``k`` starts inside a span, else :data:`IGNORE_INDEX`.
    """
    labels = [IGNORE_INDEX] * len(input_ids)
    span = 0
    for k, (token_start, _) in enumerate(offsets):
        while span < len(spans) and token_start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if token_start >= spans[span][0]:
            labels[k] = input_ids[k]
    return labels
