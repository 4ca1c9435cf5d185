"""Bundled chat templates, used when a tokenizer has none of its own.

The templates are Jinja files under ``chat/templates/`` (data, not code), in the
same dialect ``tokenizer.apply_chat_template`` renders. Each entry records the
special tokens the template needs and the token that ends an assistant turn,
which must be a training target so the model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from ayar.errors import AyarError


@dataclass(frozen=True)
class ChatTemplate:
    """A bundled template and the tokens it relies on."""

    name: str
    end_of_turn: str  # the token that closes an assistant turn
    special_tokens: tuple[str, ...]  # tokens the tokenizer must know as single ids
    bos: str | None = None  # emitted by the template itself, so never added again

    @property
    def source(self) -> str:
        return resources.files("ayar.chat").joinpath(f"templates/{self.name}.jinja").read_text("utf-8")


TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate("chatml", end_of_turn="<|im_end|>", special_tokens=("<|im_start|>", "<|im_end|>")),
}


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
