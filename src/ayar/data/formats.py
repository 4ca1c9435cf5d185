"""Input formats, detected and converted once into ayar's internal record types.

Four record types leave this module, one per kind of data:

- :class:`~ayar.data.read.Conversation` (SFT): OpenAI messages, from ``messages``,
  ShareGPT, Alpaca and prompt/completion rows;
- :class:`Preference` (DPO, ORPO, ...): a prompt as messages ending with a user turn,
  and the chosen and rejected assistant replies;
- :class:`KtoExample` (KTO): a prompt, one assistant reply and a desirable/undesirable label;
- :class:`~ayar.data.read.Text` (continued pretraining): a raw document.

Everything after conversion (cleaning, redaction, dedup, split, training) works
on these types. :func:`to_json` writes them in the form the ``prepare`` stage
outputs, which :func:`convert` reads back (prepared data is valid input).

A record that cannot be converted raises :class:`RecordError` with a reason code
(counted in the data card) and a detail that names fields and positions only,
never a value from the record, so it can go to the rejects file safely.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ayar.data.read import ROLES, Conversation, Text, check_messages

Message = dict[str, str]


@dataclass(frozen=True)
class Preference:
    """A preference pair: ``prompt`` (messages, last one from the user) and two assistant replies."""

    source: str
    line: int
    prompt: list[Message]
    chosen: str
    rejected: str


@dataclass(frozen=True)
class KtoExample:
    """One reply rated on its own: ``label`` True for desirable, False for undesirable."""

    source: str
    line: int
    prompt: list[Message]
    completion: str
    label: bool


Record = Conversation | Preference | KtoExample | Text


class RecordError(ValueError):
    """A record that cannot be used: ``code`` (e.g. ``missing_field``) and a value-free ``detail``."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


# ----------------------------------------------------------------------------- detection

# (format, fields that identify it), tried in order: the first whose fields are all present wins.
_SIGNATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("preference", ("chosen", "rejected")),
    ("kto", ("completion", "label")),
    ("alpaca", ("instruction", "output")),
    ("prompt_completion", ("prompt", "completion")),
    ("text", ("text",)),
)
# Field names that may be shown in messages: those of the formats, and common companions. Anything else a
# record calls a field may be data (a CSV without a header row makes its first record the "field names").
KNOWN_FIELDS = frozenset({f for _, fields in _SIGNATURES for f in fields} | {
    "input", "system", "response", "id", "meta", "source", "label", "category", "group", "language"})
KIND_OF_FORMAT = {"messages": "conversation", "sharegpt": "conversation", "alpaca": "conversation",
                  "prompt_completion": "conversation", "preference": "preference", "kto": "kto", "text": "text"}
KIND_OF_RECORD = {Conversation: "conversation", Preference: "preference", KtoExample: "kto", Text: "text"}


def detect_format(raw: dict[str, Any]) -> str | None:
    """The format a record's fields point to, or None when none fits."""
    for name, fields in _SIGNATURES:
        if all(field in raw for field in fields):
            return name
    return None


def apply_columns(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """``raw`` with each mapped column renamed to its ayar field (``columns`` is {ayar field: column})."""
    if not columns:
        return raw
    out = dict(raw)
    for field, column in columns.items():
        if column in out:
            out[field] = out.pop(column)
    return out


def kind_of(record: Record) -> str:
    """"conversation", "preference", "kto" or "text"."""
    return KIND_OF_RECORD[type(record)]


# ----------------------------------------------------------------------------- field helpers


def _require(raw: dict[str, Any], field: str) -> Any:
    value = raw.get(field)
    if value is None:
        raise RecordError("missing_field", f"missing field `{field}`")
    return value


def _optional_str(raw: dict[str, Any], field: str) -> str | None:
    value = raw.get(field)
    if value is None or value == "":  # CSV writes absent values as empty cells
        return None
    if not isinstance(value, str):
        raise RecordError("wrong_type", f"field `{field}` must be a string")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError("wrong_type", f"field `{field}` must be a string")
    if not value.strip():
        raise RecordError("empty_text", f"field `{field}` is empty")
    return value


def _as_list(value: Any, field: str) -> list:
    """A list, or a JSON list held in a string (how CSV and some exports store nested data)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RecordError("wrong_type", f"field `{field}` is a string that is not a JSON list") from None
    if not isinstance(value, list):
        raise RecordError("wrong_type", f"field `{field}` must be a list")
    if not value:
        raise RecordError("empty_text", f"field `{field}` is an empty list")
    return value


def _message_list(value: Any, field: str) -> list[Message]:
    """Check the shape of each message (role known, content a string); order is checked later."""
    out = []
    for i, message in enumerate(_as_list(value, field)):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RecordError("bad_message", f"{field}[{i}] needs `role` and `content`")
        if message["role"] not in ROLES:
            raise RecordError("bad_message", f"{field}[{i}] has an unknown role; expected one of {', '.join(ROLES)}")
        if not isinstance(message["content"], str):
            raise RecordError("bad_message", f"{field}[{i}] content must be a string")
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _check_order(messages: list[Message], field: str, last: str) -> None:
    """Optional system first, then user and assistant alternating from user, ending with ``last``."""
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    if not turns:
        raise RecordError("role_order", f"`{field}` has no user turn")
    for i, message in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if message["role"] != expected:
            position = i + len(messages) - len(turns)
            raise RecordError("role_order", f"{field}[{position}] is {message['role']}; expected {expected} "
                                            "(system first, then user and assistant alternating)")
    if turns[-1]["role"] != last:
        raise RecordError("role_order" if last == "user" else "no_assistant_turn",
                          f"`{field}` must end with {'an assistant' if last == 'assistant' else 'a user'} turn")


def _conversation(messages: list[Message], field: str) -> list[Message]:
    for i, message in enumerate(messages):
        if message["role"] == "assistant" and not message["content"].strip():
            raise RecordError("empty_assistant_turn", f"{field}[{i}] is an empty assistant turn")
    _check_order(messages, field, "assistant")
    try:  # the same gate the training reader applies
        return check_messages(messages)
    except ValueError as exc:
        raise RecordError("bad_message", f"`{field}`: {exc}") from None


def _prompt(value: Any, field: str) -> list[Message]:
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return [{"role": "user", "content": _string(value, field)}]
    messages = _message_list(value, field)
    _check_order(messages, field, "user")
    return messages


def _reply(value: Any, field: str, prompt: list[Message] | None = None) -> str:
    """A reply given as a string, or as a list holding one assistant message.

    A list that repeats ``prompt`` first (the full-conversation form) loses that prefix.
    """
    if isinstance(value, str) and not value.lstrip().startswith("["):
        return _string(value, field)
    messages = _message_list(value, field)
    if prompt and len(messages) > len(prompt) and messages[:len(prompt)] == prompt:
        messages = messages[len(prompt):]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RecordError("role_order", f"`{field}` must be a string or a list of one assistant message")
    return _string(messages[0]["content"], field)


# ----------------------------------------------------------------------------- converters


def _from_messages(raw: dict[str, Any]) -> tuple:
    return (_conversation(_message_list(_require(raw, "messages"), "messages"), "messages"),)


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "bot": "assistant", "model": "assistant", "system": "system"}


def _from_sharegpt(raw: dict[str, Any]) -> tuple:
    turns = _as_list(_require(raw, "conversations"), "conversations")
    messages = []
    system = _optional_str(raw, "system")
    if system is not None:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError("bad_message", f"conversations[{i}] must be an object with `from` and `value`")
        speaker, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if speaker not in _SHAREGPT_ROLES:
            raise RecordError("bad_message", f"conversations[{i}] has an unknown speaker; expected one of "
                                             f"{', '.join(_SHAREGPT_ROLES)}")
        if not isinstance(text, str):
            raise RecordError("bad_message", f"conversations[{i}] needs a string `value`")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": text})
    return (_conversation(messages, "conversations"),)


def _from_alpaca(raw: dict[str, Any]) -> tuple:
    instruction = _string(_require(raw, "instruction"), "instruction")
    extra = _optional_str(raw, "input")
    output = _require(raw, "output")
    if not isinstance(output, str):
        raise RecordError("wrong_type", "field `output` must be a string")
    messages = []
    system = _optional_str(raw, "system")
    if system is not None:
        messages.append({"role": "system", "content": system})
    history = raw.get("history")
    if history not in (None, "", []):
        for i, pair in enumerate(_as_list(history, "history")):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise RecordError("wrong_type", f"history[{i}] must be a pair [instruction, response] of strings")
            messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return (_conversation(messages, "messages"),)


def _from_prompt_completion(raw: dict[str, Any]) -> tuple:
    prompt = _prompt(_require(raw, "prompt"), "prompt")
    completion = _reply(_require(raw, "completion"), "completion", prompt)
    return (_conversation(prompt + [{"role": "assistant", "content": completion}], "messages"),)


def _shared_prompt(chosen: Any, rejected: Any) -> list[Message]:
    """Implicit-prompt pairs (no `prompt` field): the leading messages chosen and rejected share."""
    chosen_m, rejected_m = _message_list(chosen, "chosen"), _message_list(rejected, "rejected")
    shared = 0
    while shared < min(len(chosen_m), len(rejected_m)) - 1 and chosen_m[shared] == rejected_m[shared]:
        shared += 1
    if shared == 0:
        raise RecordError("missing_field", "missing field `prompt` (chosen and rejected share no leading messages)")
    prompt = chosen_m[:shared]
    _check_order(prompt, "prompt", "user")
    return prompt


def _from_preference(raw: dict[str, Any]) -> tuple:
    chosen, rejected = _require(raw, "chosen"), _require(raw, "rejected")
    if raw.get("prompt") in (None, ""):
        prompt = _shared_prompt(chosen, rejected)
    else:
        prompt = _prompt(raw["prompt"], "prompt")
    chosen, rejected = _reply(chosen, "chosen", prompt), _reply(rejected, "rejected", prompt)
    if chosen == rejected:
        raise RecordError("identical_pair", "chosen and rejected are the same text")
    return prompt, chosen, rejected


_LABELS = {True: True, False: False, "true": True, "false": False, "1": True, "0": False}  # 1 == True, 0 == False


def _from_kto(raw: dict[str, Any]) -> tuple:
    prompt = _prompt(_require(raw, "prompt"), "prompt")
    completion = _reply(_require(raw, "completion"), "completion", prompt)
    label = _require(raw, "label")
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, float) or key not in _LABELS:
        raise RecordError("bad_label", "field `label` must be true or false (or 1 / 0)")
    return prompt, completion, _LABELS[key]


def _from_text(raw: dict[str, Any]) -> tuple:
    return (_string(_require(raw, "text"), "text"),)


# format -> (converter returning the record's fields, record type)
CONVERTERS: dict[str, tuple[Callable[[dict[str, Any]], tuple], type]] = {
    "messages": (_from_messages, Conversation),
    "sharegpt": (_from_sharegpt, Conversation),
    "alpaca": (_from_alpaca, Conversation),
    "prompt_completion": (_from_prompt_completion, Conversation),
    "preference": (_from_preference, Preference),
    "kto": (_from_kto, KtoExample),
    "text": (_from_text, Text),
}


def convert(raw: dict[str, Any], fmt: str, source: str, line: int) -> Record:
    """Convert one raw record of format ``fmt`` into its internal record.

    Raises:
        RecordError: the record does not fit the format; ``code`` says why.
    """
    converter, record_type = CONVERTERS[fmt]
    return record_type(source, line, *converter(raw))


# ----------------------------------------------------------------------------- after conversion


def to_json(record: Record) -> dict[str, Any]:
    """The record as the prepare stage writes it (TRL's conversational forms for preference and KTO)."""
    if isinstance(record, Conversation):
        return {"messages": record.messages}
    if isinstance(record, Preference):
        return {"prompt": record.prompt, "chosen": [{"role": "assistant", "content": record.chosen}],
                "rejected": [{"role": "assistant", "content": record.rejected}]}
    if isinstance(record, KtoExample):
        return {"prompt": record.prompt, "completion": [{"role": "assistant", "content": record.completion}],
                "label": record.label}
    return {"text": record.text}


OUTPUT_FORMAT = {"conversation": "messages", "preference": "preference", "kto": "kto", "text": "text"}


def map_texts(record: Record, fn: Callable[[str], str]) -> Record:
    """A copy of ``record`` with ``fn`` applied to every text (message contents, replies, documents)."""

    def messages(items: list[Message]) -> list[Message]:
        return [{"role": m["role"], "content": fn(m["content"])} for m in items]

    if isinstance(record, Conversation):
        return replace(record, messages=messages(record.messages))
    if isinstance(record, Preference):
        return replace(record, prompt=messages(record.prompt), chosen=fn(record.chosen), rejected=fn(record.rejected))
    if isinstance(record, KtoExample):
        return replace(record, prompt=messages(record.prompt), completion=fn(record.completion))
    return replace(record, text=fn(record.text))


def record_texts(record: Record) -> list[tuple[str, str]]:
    """``(label, text)`` of every text in the record, in reading order; labels are roles or field names."""
    if isinstance(record, Conversation):
        return [(m["role"], m["content"]) for m in record.messages]
    if isinstance(record, Preference):
        return [(m["role"], m["content"]) for m in record.prompt] + [("chosen", record.chosen),
                                                                      ("rejected", record.rejected)]
    if isinstance(record, KtoExample):
        return [(m["role"], m["content"]) for m in record.prompt] + [("completion", record.completion),
                                                                      ("label", str(record.label).lower())]
    return [("text", record.text)]


def record_text(record: Record) -> str:
    """All texts of the record as one string ("role: text" lines), for length, dedup and leakage."""
    return "\n".join(f"{label}: {text}" for label, text in record_texts(record))
