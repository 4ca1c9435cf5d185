"""Text cleaning and length filters, Turkish-aware.

Cleaning never changes meaning: Unicode NFC, the dotted-i repair, removal of
control and invisible characters, and whitespace normalisation. Case is kept
as written; :func:`tr_casefold` (used for duplicate keys) lower-cases with the
Turkish rules, where ``str.lower`` turns "İ" into "i̇" (two code points) and "I"
into "i" instead of "ı".
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path

import regex as re

from ayar.data.formats import (
    Conversation,
    KtoExample,
    Preference,
    Record,
    RecordError,
    map_texts,
    record_texts,
)
from ayar.data.pii.gazetteer import tr_lower, tr_upper
from ayar.data.prepare_config import CleanConfig, LengthConfig
from ayar.errors import AyarError

__all__ = ["LengthFilter", "clean_record", "clean_text", "empty_turn", "special_text", "tr_casefold", "tr_lower",
           "tr_upper"]

# Control characters except tab and newline, plus invisible format characters that only hide text:
# zero-width space, word joiner, BOM, soft hyphen, bidi controls. ZWJ/ZWNJ stay (emoji, scripts).
_INVISIBLE = re.compile(r"[\p{Cc}--[\t\n]]|[\u00ad\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]", re.V1)
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace but newline (tabs, NBSP, thin spaces)
_BLANK_LINES = re.compile(r"\n{3,}")
_DOTTED_I = "i\u0307"


def tr_casefold(text: str) -> str:
    """A comparison key: NFC, Turkish lower case, the dotted-i repair, whitespace collapsed."""
    text = tr_lower(unicodedata.normalize("NFC", text)).replace(_DOTTED_I, "i")
    return " ".join(text.split())


def clean_text(text: str, config: CleanConfig) -> str:
    """Apply the cleaning steps ``config`` turns on, in a fixed order."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if config.nfc:
        text = unicodedata.normalize("NFC", text)
    if config.fix_dotted_i:
        text = text.replace(_DOTTED_I, "i").replace("I\u0307", "İ")
    if config.remove_control:
        text = _INVISIBLE.sub("", text)
    if config.whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANK_LINES.sub("\n\n", text).strip()
    return text


def clean_record(record: Record, config: CleanConfig) -> Record:
    """``record`` with every text cleaned."""
    return map_texts(record, lambda text: clean_text(text, config))


def empty_turn(record: Record) -> RecordError | None:
    """The problem when a turn or reply is empty (after cleaning), else None."""
    if isinstance(record, (Conversation, Preference, KtoExample)):
        for label, text in record_texts(record):
            if label != "label" and not text.strip():
                return RecordError("empty_turn", f"an empty {label} turn")
        return None
    if not record.text.strip():
        return RecordError("empty_text", "the text is empty")
    return None


def special_text(record: Record, config: CleanConfig) -> RecordError | None:
    """With ``special_tokens: reject``, the problem when a text spells a chat control token, else None.

    The detail names the field and the token, never the surrounding text.
    """
    if config.special_tokens != "reject":
        return None
    from ayar.chat.templates import known_special_text

    for label, text in record_texts(record):
        found = [(at, token) for token in known_special_text() if (at := text.find(token)) >= 0]
        if found:
            return RecordError("special_token", f"the {label} text holds the control token {min(found)[1]!r}")
    return None


class LengthFilter:
    """Rejects records outside ``[config.min, config.max]`` characters or tokens (all texts together).

    Args:
        config: the ``length`` section.
        base_dir: folder that a relative tokenizer path is resolved against.

    Raises:
        AyarError: ``unit`` is tokens and the tokenizer cannot be loaded.
    """

    def __init__(self, config: LengthConfig, base_dir: Path | None = None):
        self.config = config
        self.measure: Callable[[str], int] = len
        if config.unit == "tokens":
            self.measure = token_counter(config.tokenizer or "", base_dir)

    def check(self, record: Record) -> RecordError | None:
        """The problem with ``record``'s length, or None."""
        size = self.measure("\n".join(text for _, text in record_texts(record)))
        if size < self.config.min:
            return RecordError("too_short", f"{size} {self.config.unit}, below the minimum {self.config.min}")
        if self.config.max is not None and size > self.config.max:
            return RecordError("too_long", f"{size} {self.config.unit}, above the maximum {self.config.max}")
        return None


def token_counter(tokenizer: str, base_dir: Path | None = None) -> Callable[[str], int]:
    """A function giving the number of tokens of a text (no special tokens), from a local tokenizer.

    Raises:
        AyarError: the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    path = Path(tokenizer).expanduser()
    if not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    source = str(path) if path.exists() else tokenizer
    try:
        loaded = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AyarError(f"prepare.length.tokenizer: cannot load a tokenizer from {tokenizer!r}: {first} "
                        "(give a local model or tokenizer folder)") from None
    return lambda text: len(loaded(text, add_special_tokens=False)["input_ids"])
