"""The server's pure pieces: incremental text with stop sequences, A/B draws, option parsing, limits."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from ayar.errors import AyarError
from ayar.serve.app import _token_budget
from ayar.serve.launch import parse_ab, parse_adapter
from ayar.serve.models import ABRoute
from ayar.serve.protocol import ChatRequest, CompletionRequest, OpenAIError, validation_error
from ayar.serve.text import TextStream, held_back


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from ayar.model.load import load_tokenizer

    return load_tokenizer(str(tiny_llama))


@pytest.mark.parametrize(("text", "stops", "expected"), [
    ("Hello An", ["Answer:"], 2),  # "An" may start "Answer:"
    ("Hello A", ["Answer:", "Hello AB"], 7),  # the longest candidate wins
    ("Answer", ["Answer:"], 6),
    ("xyz", ["q"], 0),  # a one-character stop is never partial
    ("abc\ufffd\ufffd", [], 2),  # an unfinished UTF-8 character
    ("", ["Answer:"], 0),
])
def test_held_back(text, stops, expected):
    assert held_back(text, stops) == expected


def feed(stream: TextStream, ids: list[int]) -> list[str]:
    """Feed ids until the stream ends; return what each step released."""
    out = []
    for token in ids:
        out.append(stream.add(token))
        if stream.finish_reason:
            break
    return out


def test_stop_sequence_split_over_tokens_is_never_shown(tokenizer):
    ids = tokenizer("kırmızı çanta Answer: evet", add_special_tokens=False)["input_ids"]
    # Tokens: kırmızı | ' çanta' | ' ' | A | n | s | w | er | : | ...: "Answer:" completes at the 9th;
    # "A" to "er" could each still become "Answer:", so they are held and then dropped.
    stream = TextStream(tokenizer, [], ["Answer:"])
    assert feed(stream, ids) == ["kırmızı", " çanta", " ", "", "", "", "", "", ""]
    assert stream.text == "kırmızı çanta " and stream.finish_reason == "stop" and len(stream.ids) == 9
    with pytest.raises(RuntimeError):
        stream.add(ids[9])


def test_character_split_over_byte_tokens_waits_for_its_second_byte(tokenizer):
    # "ç" is the two UTF-8 bytes C3 A7, the byte-level tokens "Ã" and "§".
    stream = TextStream(tokenizer, [])
    assert feed(stream, tokenizer.convert_tokens_to_ids(["Ã", "§"])) == ["", "ç"]
    assert stream.finish_reason is None and stream.flush() == ""


def test_end_of_turn_token_ends_the_text_and_flushes(tokenizer):
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stream = TextStream(tokenizer, [end], ["masa?"])
    ids = tokenizer("iki masa", add_special_tokens=False)["input_ids"] + [end]
    # Tokens i | k | i | ' masa' | <|im_end|>: "masa" may start "masa?", so it waits for the end of turn.
    assert feed(stream, ids) == ["i", "k", "i", " ", "masa"]
    assert stream.text == "iki masa" and stream.finish_reason == "stop" and len(stream.ids) == 5


def test_ab_route_draws_follow_weights():
    route = ABRoute("r", [("a", 3.0), ("b", 1.0)], seed=5)
    draws = [route.pick() for _ in range(20000)]
    rng = random.Random(5)
    assert draws[:50] == ["a" if rng.random() < 0.75 else "b" for _ in range(50)]
    assert abs(draws.count("a") / 20000 - 0.75) < 0.01
    three = ABRoute("r", [("x", 1), ("y", 2), ("z", 1)], seed=1)
    counts = [three.pick() for _ in range(20000)]
    assert [round(counts.count(n) / 20000, 2) for n in "xyz"] == pytest.approx([0.25, 0.5, 0.25], abs=0.011)


def test_option_parsing():
    assert parse_adapter("support = runs/a=b") == ("support", "runs/a=b")
    assert parse_ab("exp=v1:0.9,v2:0.1") == ("exp", [("v1", 0.9), ("v2", 0.1)])
    assert parse_ab("exp=org/m:v1:1,base:3") == ("exp", [("org/m:v1", 1.0), ("base", 3.0)])
    for bad in ("exp", "exp=v1:0.9", "exp=v1:0,v2:1", "exp=v1:x,v2:1", "=a:1,b:1", "exp=v1,v2"):
        with pytest.raises(AyarError, match="--ab"):
            parse_ab(bad)
    for bad in ("support", "=path", "name="):
        with pytest.raises(AyarError, match="--adapter"):
            parse_adapter(bad)


def test_token_budget_against_the_context():
    assert _token_budget(10, None, 1024) == 1014  # not asked: what the context leaves
    assert _token_budget(10, 1014, 1024) == 1014
    for n_prompt, asked in ((10, 1015), (1024, None), (1024, 1)):
        with pytest.raises(OpenAIError) as err:
            _token_budget(n_prompt, asked, 1024)
        assert err.value.status == 400 and err.value.code == "context_length_exceeded"


def test_request_schema_normalises_and_reports_every_problem():
    request = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Kısa "}, {"type": "text", "text": "yaz."}]}],
        "stop": "\n"})
    assert request.stop == ["\n"] and request.messages[0].as_record() == {"role": "system", "content": "Kısa yaz."}
    assert CompletionRequest.model_validate({"model": "m", "prompt": ["x"]}).prompt == "x"
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x"}).max_tokens == 16
    with pytest.raises(ValidationError) as exc:
        ChatRequest.model_validate({"model": "m", "messages": [], "temperature": 3, "logit_bias": {"x": 1}})
    error = validation_error(exc.value)
    assert error.status == 400 and error.param == "temperature"
    assert error.message == ("temperature: Input should be less than or equal to 2; logit_bias: keys are token ids "
                             "written in ASCII digits, got 'x'; messages: List should have at least 1 item after "
                             "validation, not 0")
