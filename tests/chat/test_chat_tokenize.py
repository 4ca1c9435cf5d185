"""Conversations to ids and labels: parity with apply_chat_template, and exact loss masks."""

from __future__ import annotations

import pytest

from ayar.chat.templates import TEMPLATES
from ayar.chat.tokenize import IGNORE_INDEX, ConversationError, encode_conversation, labels_from_spans
from ayar.errors import AyarError

NAMES = sorted(TEMPLATES)

SYSTEM = {"role": "system", "content": "Sen kibar bir müşteri temsilcisisin."}
CONVERSATIONS = {
    "single": [
        {"role": "user", "content": "Siparişim nerede?"},
        {"role": "assistant", "content": "Siparişiniz yarın kargoya verilecek."},
    ],
    "system": [
        SYSTEM,
        {"role": "user", "content": "Hello, can you help me?"},
        {"role": "assistant", "content": "Of course. How can I help you today?"},
    ],
    "multi": [
        {"role": "user", "content": "İstanbul'da hava nasıl?"},
        {"role": "assistant", "content": "Bugün güneşli, ılık bir gün."},
        {"role": "user", "content": "Ya Ankara?"},
        {"role": "assistant", "content": "Ankara'da yağmur bekleniyor."},
    ],
    "multi-system-turkish": [
        SYSTEM,
        {"role": "user", "content": "IĞDIR ılıca şoför güneş öğretmen ÇÖZÜM İıŞşĞğÜüÖöÇç"},
        {"role": "assistant", "content": "İyi günler! Şöyle düşünün: öğrenciler ödevlerini getirdi."},
        {"role": "user", "content": "Teşekkürler."},
        {"role": "assistant", "content": " Rica ederim.\n\nBaşka bir sorunuz var mı? "},
    ],
}


def target_runs(example) -> list[list[int]]:
    """The target ids, split into runs of consecutive targets."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token_id, label in zip(example.input_ids, example.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token_id
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return runs


def expected_targets(tokenizer, name: str, messages: list[dict]) -> list[str]:
    """Each assistant turn's content followed by the template's end-of-turn token."""
    eot = TEMPLATES[name].end_of_turn
    return [m["content"] + eot for m in messages if m["role"] == "assistant"]


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_ids_equal_apply_chat_template(tokenizers, name, conversation):
    tokenizer, messages = tokenizers[name], CONVERSATIONS[conversation]
    reference = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    example = encode_conversation(tokenizer, messages)
    assert example.input_ids == reference
    assert len(example.labels) == len(example.input_ids)


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("name", NAMES)
def test_targets_are_assistant_contents_and_end_of_turn(tokenizers, name, conversation):
    tokenizer, messages = tokenizers[name], CONVERSATIONS[conversation]
    example = encode_conversation(tokenizer, messages, loss_on="assistant")
    runs = target_runs(example)
    assert [tokenizer.decode(run) for run in runs] == expected_targets(tokenizer, name, messages)
    # Token for token: the targets are the contents tokenised on their own (every header
    # ends in a special token or a lone newline, so no token straddles a boundary).
    expected = expected_targets(tokenizer, name, messages)
    assert runs == [tokenizer(text, add_special_tokens=False)["input_ids"] for text in expected]


def runs_text(runs, tokenizer) -> list[str]:
    return [tokenizer.decode(run) for run in runs]


def test_chatml_mask_pinned(tokenizers):
    """Hand-checked positions: header and the newline (Ċ) after <|im_end|> carry no loss."""
    tokenizer = tokenizers["chatml"]
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    example = encode_conversation(tokenizer, messages)
    tokens = tokenizer.convert_ids_to_tokens(example.input_ids)
    assert tokens == ["<|im_start|>", "user", "Ċ", "a", "<|im_end|>", "Ċ", "<|im_start|>", "as", "sistant",
                      "Ċ", "b", "<|im_end|>", "Ċ"]  # fmt: skip
    targets = [t for t, label in zip(tokens, example.labels, strict=True) if label != IGNORE_INDEX]
    assert targets == ["b", "<|im_end|>"]
    assert example.num_targets == 2


@pytest.mark.parametrize("name", NAMES)
def test_last_assistant_targets_only_the_final_turn(tokenizers, name):
    tokenizer, messages = tokenizers[name], CONVERSATIONS["multi-system-turkish"]
    example = encode_conversation(tokenizer, messages, loss_on="last_assistant")
    assert runs_text(target_runs(example), tokenizer) == expected_targets(tokenizer, name, messages)[-1:]
    assert example.input_ids == encode_conversation(tokenizer, messages).input_ids


@pytest.mark.parametrize("name", NAMES)
def test_all_targets_every_token(tokenizers, name):
    tokenizer, messages = tokenizers[name], CONVERSATIONS["multi"]
    example = encode_conversation(tokenizer, messages, loss_on="all")
    assert example.labels == example.input_ids
    assert example.num_targets == len(example.input_ids)


@pytest.mark.parametrize("name", NAMES)
def test_exactly_one_bos(tokenizers, name):
    tokenizer = tokenizers[name]
    ids = encode_conversation(tokenizer, CONVERSATIONS["system"]).input_ids
    bos = TEMPLATES[name].bos
    if bos is None:
        assert tokenizer.bos_token is None
    else:
        bos_id = tokenizer.convert_tokens_to_ids(bos)
        assert ids[0] == bos_id and ids.count(bos_id) == 1


@pytest.mark.parametrize("name", NAMES)
def test_end_of_turn_is_a_target_when_pad_is_eos(pad_eos_tokenizers, name):
    tokenizer, messages = pad_eos_tokenizers[name], CONVERSATIONS["multi"]
    eot_id = tokenizer.convert_tokens_to_ids(TEMPLATES[name].end_of_turn)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == eot_id
    example = encode_conversation(tokenizer, messages)
    assert [run[-1] for run in target_runs(example)] == [eot_id, eot_id]
    assert runs_text(target_runs(example), tokenizer) == expected_targets(tokenizer, name, messages)


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([], "non-empty list"),
        ([{"role": "user", "content": "Merhaba"}], "no assistant turn"),
        (
            [{"role": "user", "content": "Merhaba"}, {"role": "assistant", "content": ""}],
            "message 2 .* is empty",
        ),
        ([{"role": "user", "content": "Merhaba"}, {"role": "assistant", "content": " \n"}], "is empty"),
        ([{"role": "assistant", "content": "Merhaba"}], "message 1 is an assistant turn"),
        ([{"role": "user", "content": None}, {"role": "assistant", "content": "a"}], "no text content"),
        ([{"content": "a"}, {"role": "assistant", "content": "a"}], "message 1 has no role"),
        (["a", {"role": "assistant", "content": "a"}], "not an object"),
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "yes<|im_end|>no"}],
            "end-of-turn token '<\\|im_end\\|>'",
        ),
    ],
)
def test_malformed_conversations_raise(tokenizers, messages, reason):
    with pytest.raises(ConversationError, match=reason):
        encode_conversation(tokenizers["chatml"], messages)


def test_conversation_error_is_a_user_error_and_a_value_error():
    assert issubclass(ConversationError, AyarError) and issubclass(ConversationError, ValueError)


@pytest.mark.parametrize("name", ["mistral", "gemma"])
def test_template_role_errors_become_conversation_errors(tokenizers, name):
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    with pytest.raises(ConversationError, match="roles must alternate"):
        encode_conversation(tokenizers[name], messages)


def test_bad_arguments_raise(tokenizers):
    messages = CONVERSATIONS["single"]
    with pytest.raises(ValueError, match="loss_on must be one of"):
        encode_conversation(tokenizers["chatml"], messages, loss_on="completion")
    with pytest.raises(ValueError, match="max_length must be at least 1"):
        encode_conversation(tokenizers["chatml"], messages, max_length=0)


@pytest.mark.parametrize("name", NAMES)
def test_truncation_keeps_the_first_tokens(tokenizers, name):
    tokenizer, messages = tokenizers[name], CONVERSATIONS["multi"]
    full = encode_conversation(tokenizer, messages)
    cut = len(full.input_ids) - 3
    example = encode_conversation(tokenizer, messages, max_length=cut)
    assert example.input_ids == full.input_ids[:cut]
    assert example.labels == full.labels[:cut]
    assert encode_conversation(tokenizer, messages, max_length=len(full.input_ids)) == full
    assert encode_conversation(tokenizer, messages, max_length=10_000) == full


def test_truncation_that_removes_every_target_raises(tokenizers):
    with pytest.raises(ConversationError, match="no target token is left in the first 4 tokens"):
        encode_conversation(tokenizers["llama3"], CONVERSATIONS["system"], max_length=4)


def test_a_foreign_template_is_masked_by_its_markers(make_tokenizer):
    # A ChatML variant that is not bundled: the end of turn is found in the template text.
    tokenizer = make_tokenizer("chatml")
    tokenizer.chat_template = TEMPLATES["chatml"].source.replace(
        "'\\n' -}}\n{%- endfor", "'\\n\\n' -}}\n{%- endfor"
    )
    messages = CONVERSATIONS["multi"]
    assert tokenizer.apply_chat_template(messages, tokenize=False).endswith("<|im_end|>\n\n")
    example = encode_conversation(tokenizer, messages)
    assert example.input_ids == tokenizer.apply_chat_template(messages)["input_ids"]
    assert runs_text(target_runs(example), tokenizer) == expected_targets(tokenizer, "chatml", messages)


def test_a_template_that_is_not_prefix_stable_is_refused(make_tokenizer):
    # Assistant turns are written with a "model" header but the generation prompt says "assistant".
    tokenizer = make_tokenizer("chatml")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n'"
        " + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with pytest.raises(AyarError, match="not prefix-stable at message 2"):
        encode_conversation(tokenizer, CONVERSATIONS["single"])
    # "all" needs no turn boundaries, so it still works.
    assert encode_conversation(tokenizer, CONVERSATIONS["single"], loss_on="all").num_targets > 0


def test_a_tokenizer_without_template_is_refused(make_tokenizer):
    tokenizer = make_tokenizer("chatml")
    tokenizer.chat_template = None
    with pytest.raises(AyarError, match="no chat template"):
        encode_conversation(tokenizer, CONVERSATIONS["single"])


def test_a_token_is_a_target_when_it_starts_inside_a_span():
    # Characters 0..9; spans [2, 5) and [7, 9). A token straddling a span's start
    # (1..3) is a header token; one straddling its end (4..6) still starts inside.
    offsets = [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7), (7, 8), (8, 9), (9, 10)]
    input_ids = [10, 11, 12, 13, 14, 15, 16, 17]
    labels = labels_from_spans(input_ids, offsets, [(2, 5), (7, 9)])
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, 12, 13, IGNORE_INDEX, 15, 16, IGNORE_INDEX]
