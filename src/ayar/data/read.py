"""Reading training files into ayar's record types, with errors that name file and line.

Two record types reach the training methods: a *conversation* (a list of
OpenAI-style ``{"role", "content"}`` messages) and a *text* (a raw document).
Every problem is reported as a :class:`~ayar.errors.DataError` with the file,
the 1-based line and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ayar.errors import DataError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Conversation:
    """One chat example: where it came from and its messages."""

    source: str
    line: int
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class Text:
    """One raw document for continued pretraining."""

    source: str
    line: int
    text: str


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(str(path), None, "file not found", "check data.train / data.val in the recipe")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSONL file.

    Raises:
        DataError: missing file, a line that is not UTF-8, not JSON, or not a JSON object.
    """
    path = Path(path)
    _require_file(path)
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(str(path), number, f"not valid UTF-8 (byte {exc.start})", "re-save as UTF-8") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(str(path), number, f"not valid JSON: {exc.msg} at column {exc.colno}") from None
            if not isinstance(obj, dict):
                raise DataError(str(path), number, f"expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def check_messages(messages: object) -> list[dict[str, str]]:
    """Validate an OpenAI ``messages`` list and return it with only role and content.

    This is the one structural gate every conversation passes (the training reader,
    ``ayar prepare`` and :func:`ayar.chat.tokenize.encode_conversation`). Messages are
    numbered from 1 in the reasons.

    Raises:
        ValueError: with the reason, for the caller to attach file and line.
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("a conversation must be a non-empty list of messages")
    clean = []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise ValueError(f"message {number} is not an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ValueError(f"message {number} has no role")
        if role not in ROLES:
            raise ValueError(f"message {number} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {number} ({role}) has no text content")
        if role == "system" and number != 1:
            raise ValueError(f"message {number}: a system message may only come first")
        if role == "assistant" and not content.strip():
            raise ValueError(f"message {number} (assistant) is empty; there is nothing to learn from it")
        clean.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in clean):
        raise ValueError("conversation has no assistant turn, so there is nothing to learn")
    if clean[0]["role"] == "assistant":
        raise ValueError("message 1 is an assistant turn with no prompt before it")
    return clean


def read_conversations(path: str | Path) -> list[Conversation]:
    """Read a JSONL file of ``{"messages": [...]}`` records.

    Raises:
        DataError: the first unusable record, with its line and reason.
    """
    out = []
    for number, obj in iter_jsonl(path):
        if "messages" not in obj:
            raise DataError(str(path), number, f"missing field `messages` (fields: {', '.join(obj) or 'none'})")
        try:
            messages = check_messages(obj["messages"])
        except ValueError as exc:
            raise DataError(str(path), number, str(exc)) from None
        out.append(Conversation(str(path), number, messages))
    if not out:
        raise DataError(str(path), None, "no records")
    return out


def read_texts(path: str | Path, text_field: str = "text") -> list[Text]:
    """Read raw documents: a ``.txt`` file (documents separated by blank lines) or JSONL.

    Raises:
        DataError: missing file, bad record, or a file with no text.
    """
    path = Path(path)
    out: list[Text] = []
    if path.suffix == ".txt":
        _require_file(path)
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(str(path), None, f"not valid UTF-8 (byte {exc.start})", "re-save as UTF-8") from None
        line, block, start = 0, [], 1
        for line, row in enumerate(content.splitlines(), start=1):
            if row.strip():
                if not block:
                    start = line
                block.append(row)
            elif block:
                out.append(Text(str(path), start, "\n".join(block)))
                block = []
        if block:
            out.append(Text(str(path), start, "\n".join(block)))
    else:
        for number, obj in iter_jsonl(path):
            value = obj.get(text_field)
            if not isinstance(value, str):
                raise DataError(str(path), number, f"missing string field `{text_field}`", "set data.text_field")
            if value.strip():
                out.append(Text(str(path), number, value))
    if not out:
        raise DataError(str(path), None, "no text found")
    return out
