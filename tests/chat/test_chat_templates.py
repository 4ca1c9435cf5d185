"""The bundled chat templates render the published formats, byte for byte."""

from __future__ import annotations

import jinja2
import pytest

from ayar.chat.templates import (
    TEMPLATES,
    apply_template,
    bundled_template_of,
    end_of_turn_ids,
    end_of_turn_tokens,
    get_template,
)
from ayar.errors import AyarError

CONVERSATION = [
    {"role": "system", "content": "Kısa yanıt ver."},
    {"role": "user", "content": "Merhaba!"},
    {"role": "assistant", "content": "Merhaba, nasılsınız?"},
    {"role": "user", "content": "İyiyim."},
    {"role": "assistant", "content": "Sevindim."},
]

# Hand-written from each model family's published prompt format.
EXPECTED = {
    "chatml": (
        "<|im_start|>system\nKısa yanıt ver.<|im_end|>\n"
        "<|im_start|>user\nMerhaba!<|im_end|>\n"
        "<|im_start|>assistant\nMerhaba, nasılsınız?<|im_end|>\n"
        "<|im_start|>user\nİyiyim.<|im_end|>\n"
        "<|im_start|>assistant\nSevindim.<|im_end|>\n"
    ),
    "qwen2.5": (
        "<|im_start|>system\nKısa yanıt ver.<|im_end|>\n"
        "<|im_start|>user\nMerhaba!<|im_end|>\n"
        "<|im_start|>assistant\nMerhaba, nasılsınız?<|im_end|>\n"
        "<|im_start|>user\nİyiyim.<|im_end|>\n"
        "<|im_start|>assistant\nSevindim.<|im_end|>\n"
    ),
    "llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nKısa yanıt ver.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nMerhaba!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nMerhaba, nasılsınız?<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nİyiyim.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nSevindim.<|eot_id|>"
    ),
    "mistral": (
        "<s>[INST] Kısa yanıt ver.\n\nMerhaba! [/INST]Merhaba, nasılsınız?</s>[INST] İyiyim. [/INST]Sevindim.</s>"
    ),
    "gemma": (
        "<bos><start_of_turn>user\nKısa yanıt ver.\n\nMerhaba!<end_of_turn>\n"
        "<start_of_turn>model\nMerhaba, nasılsınız?<end_of_turn>\n"
        "<start_of_turn>user\nİyiyim.<end_of_turn>\n"
        "<start_of_turn>model\nSevindim.<end_of_turn>\n"
    ),
}

# The prompt for the first answer: system + user, with add_generation_prompt=True.
EXPECTED_PROMPT = {
    "chatml": "<|im_start|>system\nKısa yanıt ver.<|im_end|>\n<|im_start|>user\nMerhaba!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "qwen2.5": "<|im_start|>system\nKısa yanıt ver.<|im_end|>\n<|im_start|>user\nMerhaba!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nKısa yanıt ver.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nMerhaba!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": "<s>[INST] Kısa yanıt ver.\n\nMerhaba! [/INST]",
    "gemma": "<bos><start_of_turn>user\nKısa yanıt ver.\n\nMerhaba!<end_of_turn>\n<start_of_turn>model\n",
}


def test_every_bundled_template_is_pinned():
    assert set(EXPECTED) == set(TEMPLATES) == set(EXPECTED_PROMPT)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_renders_the_published_format(tokenizers, name):
    assert tokenizers[name].apply_chat_template(CONVERSATION, tokenize=False) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_generation_prompt(tokenizers, name):
    rendered = tokenizers[name].apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    assert rendered == EXPECTED_PROMPT[name]


def test_qwen_adds_its_default_system_prompt(tokenizers):
    tokenizer = tokenizers["qwen2.5"]
    rendered = tokenizer.apply_chat_template(CONVERSATION[1:3], tokenize=False)
    assert rendered == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nMerhaba!<|im_end|>\n"
        "<|im_start|>assistant\nMerhaba, nasılsınız?<|im_end|>\n"
    )


@pytest.mark.parametrize("name", ["mistral", "gemma"])
@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "assistant", "content": "a"}],
        [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
    ],
    ids=["user-user", "assistant-first", "late-system"],
)
def test_alternating_formats_reject_other_role_orders(tokenizers, name, messages):
    with pytest.raises(jinja2.TemplateError, match="roles must alternate"):
        tokenizers[name].apply_chat_template(messages, tokenize=False)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_registry_matches_the_rendered_format(name):
    template, rendered = get_template(name), EXPECTED[name]
    assert rendered.endswith(template.end_of_turn) or rendered.endswith(template.end_of_turn + "\n")
    for token in template.special_tokens:
        assert token in rendered + EXPECTED_PROMPT[name]
    if template.bos is not None:
        assert rendered.startswith(template.bos) and rendered.count(template.bos) == 1


def test_unknown_template_name():
    with pytest.raises(AyarError, match="bundled templates: chatml, gemma, llama3, mistral, qwen2.5"):
        get_template("vicuna")


def test_apply_template_sets_a_bundled_template(make_tokenizer):
    tokenizer = make_tokenizer("chatml")
    tokenizer.chat_template = None
    apply_template(tokenizer, "qwen2.5")
    assert tokenizer.chat_template == TEMPLATES["qwen2.5"].source
    assert bundled_template_of(tokenizer) is TEMPLATES["qwen2.5"]


def test_apply_template_reads_a_jinja_file(make_tokenizer, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}{{ m['content'] + '<|im_end|>' }}{% endfor %}", encoding="utf-8")
    tokenizer = make_tokenizer("chatml")
    apply_template(tokenizer, str(path))
    assert tokenizer.chat_template == path.read_text(encoding="utf-8")
    with pytest.raises(AyarError, match="does not exist"):
        apply_template(tokenizer, str(tmp_path / "missing.jinja"))


def test_apply_template_none_keeps_or_asks_for_a_template(make_tokenizer):
    tokenizer = make_tokenizer("llama3")
    apply_template(tokenizer, None)
    assert tokenizer.chat_template == TEMPLATES["llama3"].source
    tokenizer.chat_template = None
    with pytest.raises(AyarError, match="set model.chat_template in the recipe"):
        apply_template(tokenizer, None)


def test_apply_template_rejects_unknown_names_and_other_families(make_tokenizer):
    tokenizer = make_tokenizer("chatml")
    with pytest.raises(AyarError, match="unknown chat template 'vicuna'"):
        apply_template(tokenizer, "vicuna")
    with pytest.raises(AyarError, match="'<\\|eot_id\\|>' as one token"):
        apply_template(tokenizer, "llama3")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_end_of_turn_ids_of_bundled_templates(tokenizers, name):
    tokenizer = tokenizers[name]
    eot = TEMPLATES[name].end_of_turn
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids(eot)]


def test_end_of_turn_detected_from_a_foreign_template(corpus):
    from ayar.model.tiny import build_tokenizer

    # A Llama-3-like template that is not the bundled one, and an EOS that differs from the end of turn.
    source = TEMPLATES["llama3"].source + "{#- a local edit -#}"
    tokenizer = build_tokenizer(
        corpus,
        vocab_size=400,
        special_tokens=TEMPLATES["llama3"].special_tokens,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        chat_template=source,
    )
    assert bundled_template_of(tokenizer) is None
    assert end_of_turn_tokens(tokenizer) == ["<|eot_id|>", "<|end_of_text|>"]
    assert end_of_turn_ids(tokenizer) == tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
