"""Tokenizers for every bundled chat template, trained locally on a tiny corpus."""

from __future__ import annotations

import pytest

from ayar.chat.templates import TEMPLATES
from ayar.model.tiny import build_tokenizer

CORPUS = [
    "Merhaba, size nasıl yardımcı olabilirim? Siparişiniz yarın kargoya verilecek.",
    "İstanbul'da bugün hava güneşli; Ankara'da ise yağmur bekleniyor.",
    "Ilık bir çay içip şöyle bir düşündü: öğrenciler ödevlerini getirdi mi?",
    "Hello, how can I help you today? Your order will ship tomorrow.",
    "The assistant answers politely and briefly, in Turkish or in English.",
    "Roles: system, user, assistant, model.",
] * 20


def tokenizer_for(name: str, *, pad_is_eos: bool = False):
    """A tokenizer with the bundled template ``name``; its EOS is the template's end of turn."""
    template = TEMPLATES[name]
    return build_tokenizer(
        CORPUS,
        vocab_size=400,
        special_tokens=template.special_tokens,
        bos_token=template.bos,
        eos_token=template.end_of_turn,
        pad_token=template.end_of_turn if pad_is_eos else "<|endoftext|>",
        chat_template=template.source,
    )


@pytest.fixture(scope="session")
def tokenizers() -> dict:
    """Template name -> tokenizer (pad distinct from EOS)."""
    return {name: tokenizer_for(name) for name in TEMPLATES}


@pytest.fixture(scope="session")
def pad_eos_tokenizers() -> dict:
    """Template name -> tokenizer whose pad token is the end-of-turn token."""
    return {name: tokenizer_for(name, pad_is_eos=True) for name in TEMPLATES}


@pytest.fixture(scope="session")
def make_tokenizer():
    """The factory :func:`tokenizer_for`, for tests that change a tokenizer."""
    return tokenizer_for


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return CORPUS
