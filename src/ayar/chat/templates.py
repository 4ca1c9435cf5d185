"""Bundled chat templates, used when a tokenizer has none of its own.

The templates are Jinja files under ``chat/templates/`` (data, not code), in the
same dialect ``tokenizer.apply_chat_template`` renders. Each entry records the
special tokens the template needs and the token that ends an assistant turn,
which must be a training target so the model learns to stop.

All bundled templates render message contents exactly as given (no trimming)
and are prefix-stable: rendering the first ``i`` messages with
``add_generation_prompt=True`` gives a prefix of the rendered conversation,
which is what :mod:`ayar.chat.tokenize` relies on to find each assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ayar.errors import AyarError

# Markers that close an assistant turn in widely used templates, checked in this
# order when a tokenizer brings its own template.
KNOWN_END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "</s>")


@dataclass(frozen=True)
class ChatTemplate:
    """A bundled template and the tokens it relies on."""

    name: str
    end_of_turn: str  # the token that closes an assistant turn
    special_tokens: tuple[str, ...]  # tokens the tokenizer must know as single ids
    bos: str | None = None  # emitted by the template itself, so never added again

    @property
    def source(self) -> str:
        """The Jinja source, read from the package data file."""
        return _read_source(self.name)


@cache
def _read_source(name: str) -> str:
    return resources.files("ayar.chat").joinpath(f"templates/{name}.jinja").read_text("utf-8")


TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate("chatml", end_of_turn="<|im_end|>", special_tokens=("<|im_start|>", "<|im_end|>")),
    "llama3": ChatTemplate(
        "llama3",
        end_of_turn="<|eot_id|>",
        special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        bos="<|begin_of_text|>",
    ),
    "mistral": ChatTemplate("mistral", end_of_turn="</s>", special_tokens=("[INST]", "[/INST]"), bos="<s>"),
    "qwen2.5": ChatTemplate(
        "qwen2.5", end_of_turn="<|im_end|>", special_tokens=("<|im_start|>", "<|im_end|>")
    ),
    "gemma": ChatTemplate(
        "gemma",
        end_of_turn="<end_of_turn>",
        special_tokens=("<start_of_turn>", "<end_of_turn>"),
        bos="<bos>",
    ),
}


@cache
def known_special_text() -> tuple[str, ...]:
    """Control-token spellings of the bundled templates and of other common formats (``special_tokens.txt``)."""
    listed = resources.files("ayar.chat").joinpath("special_tokens.txt").read_text("utf-8").splitlines()
    bundled = [s for t in TEMPLATES.values() for s in (*t.special_tokens, t.end_of_turn, t.bos) if s]
    found = {line.strip() for line in listed if line.strip() and not line.startswith("#")} | set(bundled)
    return tuple(sorted(found, key=len, reverse=True))


def get_template(name: str) -> ChatTemplate:
    """Return the bundled template ``name``.

    Raises:
        AyarError: the name is not a bundled template.
    """
    try:
        return TEMPLATES[name]
    except KeyError:
        known = ", ".join(sorted(TEMPLATES))
        raise AyarError(f"unknown chat template {name!r}; bundled templates: {known}") from None


def bundled_template_of(tokenizer) -> ChatTemplate | None:
    """Return the bundled template the tokenizer's chat template is, or None.

    Args:
        tokenizer: a Hugging Face tokenizer.

    Returns:
        The registry entry whose source equals ``tokenizer.chat_template``, or None
        when the tokenizer has no template or one that is not bundled.
    """
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str):
        return None
    return next((t for t in TEMPLATES.values() if t.source == source), None)


def apply_template(tokenizer, name: str | None) -> None:
    """Give ``tokenizer`` the chat template a recipe asks for (in place).

    Args:
        tokenizer: a Hugging Face tokenizer; its ``chat_template`` is replaced.
        name: a bundled template name (``chatml``, ``llama3``, ``mistral``, ``qwen2.5``,
            ``gemma``), a path to a ``.jinja`` file, or None to keep the tokenizer's own.

    Raises:
        AyarError: ``name`` is None and the tokenizer has no template; ``name`` is
            neither a bundled template nor an existing file; or a bundled template's
            end-of-turn or BOS token is not a single token of this tokenizer (the
            template belongs to another model family).
    """
    known = ", ".join(sorted(TEMPLATES))
    if name is None:
        if not getattr(tokenizer, "chat_template", None):
            raise AyarError(
                "the tokenizer has no chat template; set model.chat_template in the recipe to one of "
                f"the bundled templates ({known}) or to a .jinja file"
            )
        return
    if name in TEMPLATES:
        template = TEMPLATES[name]
        for token in (template.end_of_turn, template.bos):
            if token is not None and not _is_single_token(tokenizer, token):
                raise AyarError(
                    f"chat template {name!r} needs {token!r} as one token, but this tokenizer splits it "
                    "or does not know it; choose the template of the model's own family"
                )
        tokenizer.chat_template = template.source
        return
    path = Path(name)
    if path.suffix == ".jinja" or path.is_file():
        if not path.is_file():
            raise AyarError(f"chat template file {name} does not exist")
        tokenizer.chat_template = path.read_text("utf-8")
        return
    raise AyarError(
        f"unknown chat template {name!r}; use one of the bundled templates ({known}) or a .jinja file"
    )


def end_of_turn_tokens(tokenizer) -> list[str]:
    """The token strings that end an assistant turn for this tokenizer.

    The bundled template's end-of-turn token when the tokenizer uses a bundled
    template; otherwise every marker of :data:`KNOWN_END_OF_TURN_MARKERS` that the
    template text contains and the tokenizer knows as one token. The tokenizer's
    EOS token is appended when it is not already listed.

    Args:
        tokenizer: a Hugging Face tokenizer.

    Returns:
        Token strings, most specific first, without duplicates.

    Raises:
        AyarError: no end-of-turn token can be found (no known marker, no EOS).
    """
    bundled = bundled_template_of(tokenizer)
    if bundled is not None:
        tokens = [bundled.end_of_turn]
    else:
        source = getattr(tokenizer, "chat_template", None) or ""
        tokens = [m for m in KNOWN_END_OF_TURN_MARKERS if m in source and _is_single_token(tokenizer, m)]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in tokens:
        tokens.append(eos)
    if not tokens:
        raise AyarError(
            "cannot tell which token ends an assistant turn: the tokenizer has no EOS token and its chat "
            "template uses none of " + ", ".join(KNOWN_END_OF_TURN_MARKERS)
        )
    return tokens


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token ids that end an assistant turn: stop ids for generation.

    Args:
        tokenizer: a Hugging Face tokenizer.

    Returns:
        Ids of :func:`end_of_turn_tokens`, in that order, without duplicates.

    Raises:
        AyarError: no end-of-turn token can be found.
    """
    ids: list[int] = []
    for token in end_of_turn_tokens(tokenizer):
        token_id = tokenizer.convert_tokens_to_ids(token)
        unknown = token_id is None or token_id == getattr(tokenizer, "unk_token_id", None)
        if not unknown and token_id not in ids:
            ids.append(token_id)
    return ids


def format_token_ids(tokenizer) -> list[int]:
    """Ids of the special tokens the chat format writes: turn markers and end-of-turn tokens (not BOS).

    A base model never saw these in pretraining (Gemma 3 270M's ``<end_of_turn>`` embedding is
    0.99 cosine-similar to its ``<unused>`` tokens), so LoRA alone cannot make the model emit
    them: ``adapter.train_embeddings: format`` trains their rows.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise AyarError("adapter.train_embeddings: format needs a chat template; the tokenizer has none: set "
                        "model.chat_template (e.g. gemma, chatml)")
    sample = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    rendered = tokenizer.apply_chat_template(sample, tokenize=True, return_dict=True)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids = {i for i in rendered if i in special} | set(end_of_turn_ids(tokenizer))
    ids.discard(tokenizer.bos_token_id)
    return sorted(ids)


def _is_single_token(tokenizer, token: str) -> bool:
    """Whether ``token`` encodes to exactly one known id."""
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    return len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None)
