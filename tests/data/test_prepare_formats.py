"""Input formats: detection, conversion into the internal record types, and value-free errors."""

from __future__ import annotations

import json

import pytest

from ayar.data.formats import (
    OUTPUT_FORMAT,
    KtoExample,
    Preference,
    RecordError,
    apply_columns,
    convert,
    detect_format,
    kind_of,
    record_text,
    to_json,
)
from ayar.data.read import Conversation, Text

SYS = {"role": "system", "content": "Kibar ol."}
USER = {"role": "user", "content": "Kargom nerede?"}
ASST = {"role": "assistant", "content": "Yarın teslim edilecek."}
OTHER = {"role": "assistant", "content": "Bilmiyorum."}

# (raw record, detected format, expected record fields after source and line)
CASES = [
    ({"messages": [SYS, USER, ASST]}, "messages", Conversation, ([SYS, USER, ASST],)),
    ({"conversations": [{"from": "human", "value": "Kargom nerede?"}, {"from": "gpt", "value": "Yarın teslim edilecek."}],
      "system": "Kibar ol."}, "sharegpt", Conversation, ([SYS, USER, ASST],)),
    ({"instruction": "Kargom nerede?", "input": "", "output": "Yarın teslim edilecek."}, "alpaca", Conversation,
     ([USER, ASST],)),
    ({"instruction": "Özetle", "input": "Uzun metin", "output": "Kısa", "system": "Kibar ol.",
      "history": [["Merhaba", "Merhaba, buyurun."]]}, "alpaca", Conversation,
     ([SYS, {"role": "user", "content": "Merhaba"}, {"role": "assistant", "content": "Merhaba, buyurun."},
       {"role": "user", "content": "Özetle\n\nUzun metin"}, {"role": "assistant", "content": "Kısa"}],)),
    ({"prompt": "Kargom nerede?", "completion": "Yarın teslim edilecek."}, "prompt_completion", Conversation,
     ([USER, ASST],)),
    ({"prompt": [SYS, USER], "completion": [ASST]}, "prompt_completion", Conversation, ([SYS, USER, ASST],)),
    ({"prompt": "Kargom nerede?", "chosen": "Yarın teslim edilecek.", "rejected": "Bilmiyorum."}, "preference",
     Preference, ([USER], ASST["content"], OTHER["content"])),
    ({"prompt": [USER], "chosen": [ASST], "rejected": [OTHER]}, "preference", Preference,
     ([USER], ASST["content"], OTHER["content"])),
    ({"chosen": [USER, ASST], "rejected": [USER, OTHER]}, "preference", Preference,  # implicit prompt
     ([USER], ASST["content"], OTHER["content"])),
    ({"prompt": "Kargom nerede?", "chosen": [USER, ASST], "rejected": [USER, OTHER]}, "preference", Preference,
     ([USER], ASST["content"], OTHER["content"])),
    ({"prompt": "Kargom nerede?", "completion": "Yarın teslim edilecek.", "label": True}, "kto", KtoExample,
     ([USER], ASST["content"], True)),
    ({"prompt": [USER], "completion": [OTHER], "label": "false"}, "kto", KtoExample, ([USER], OTHER["content"], False)),
    ({"text": "Bir belge."}, "text", Text, ("Bir belge.",)),
]


@pytest.mark.parametrize(("raw", "fmt", "record_type", "fields"), CASES)
def test_every_format_is_detected_and_converted(raw, fmt, record_type, fields):
    assert detect_format(raw) == fmt
    record = convert(raw, fmt, "in.jsonl", 7)
    assert record == record_type("in.jsonl", 7, *fields)


@pytest.mark.parametrize(("raw", "fmt", "record_type", "fields"), CASES)
def test_written_form_reads_back_to_the_same_record(raw, fmt, record_type, fields):
    record = convert(raw, fmt, "in.jsonl", 7)
    written = json.loads(json.dumps(to_json(record)))
    assert convert(written, OUTPUT_FORMAT[kind_of(record)], "in.jsonl", 7) == record
    assert detect_format(written) == OUTPUT_FORMAT[kind_of(record)]


def test_message_lists_stored_as_json_strings_are_read():
    """CSV cells and some exports hold nested data as JSON text."""
    raw = {"messages": json.dumps([USER, ASST], ensure_ascii=False)}
    assert convert(raw, "messages", "x.csv", 2).messages == [USER, ASST]


def test_columns_rename_before_detection():
    raw = apply_columns({"soru": "Kargom nerede?", "cevap": "Yarın."}, {"prompt": "soru", "completion": "cevap"})
    assert detect_format(raw) == "prompt_completion"
    assert detect_format({"question": "a", "answer": "b"}) is None


BAD = [
    ({"text": "x"}, "messages", "missing_field", "missing field `messages`"),
    ({"messages": [USER, {"role": "assistant", "content": "  "}]}, "messages", "empty_assistant_turn", "messages[1]"),
    ({"messages": [USER, USER, ASST]}, "messages", "role_order", "messages[1] is user; expected assistant"),
    ({"messages": [ASST, USER, ASST]}, "messages", "role_order", "messages[0]"),
    ({"messages": [USER, ASST, SYS, USER, ASST]}, "messages", "role_order", "messages[2]"),
    ({"messages": [USER]}, "messages", "no_assistant_turn", "must end with an assistant turn"),
    ({"messages": [{"role": "Ayşe Yılmaz", "content": "x"}, ASST]}, "messages", "bad_message", "unknown role"),
    ({"messages": [{"role": "user"}, ASST]}, "messages", "bad_message", "needs `role` and `content`"),
    ({"messages": "[not json"}, "messages", "wrong_type", "not a JSON list"),
    ({"conversations": [{"from": "function_call", "value": "x"}]}, "sharegpt", "bad_message", "unknown speaker"),
    ({"instruction": "q"}, "alpaca", "missing_field", "missing field `output`"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, "preference", "identical_pair", "same text"),
    ({"chosen": [ASST], "rejected": [OTHER]}, "preference", "missing_field", "missing field `prompt`"),
    ({"prompt": [USER, ASST], "chosen": "a", "rejected": "b"}, "preference", "role_order", "must end with a user"),
    ({"prompt": "q", "completion": "a", "label": "maybe"}, "kto", "bad_label", "true or false"),
    ({"text": "   "}, "text", "empty_text", "`text` is empty"),
    ({"text": 12}, "text", "wrong_type", "must be a string"),
]


@pytest.mark.parametrize(("raw", "fmt", "code", "detail"), BAD)
def test_bad_records_raise_a_coded_error_without_values(raw, fmt, code, detail):
    with pytest.raises(RecordError) as caught:
        convert(raw, fmt, "in.jsonl", 3)
    assert caught.value.code == code
    assert detail in caught.value.detail
    assert "Ayşe" not in caught.value.detail  # a detail names fields and positions, never values


def test_record_text_holds_every_text_with_its_role():
    record = convert(CASES[6][0], "preference", "p.jsonl", 1)
    assert record_text(record) == "user: Kargom nerede?\nchosen: Yarın teslim edilecek.\nrejected: Bilmiyorum."
