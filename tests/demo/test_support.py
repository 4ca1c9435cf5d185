"""Synthetic support replies: determinism, splits, and the formality classifier."""

from __future__ import annotations

import string
from collections import Counter

import pytest

from ayar.demo.products import load_data, tr_lower
from ayar.demo.support import formality, formality_markers, support_pairs, support_splits, topics

SLOTS = {"order": "SP1234567", "product": "kulaklık", "code": "YAZ20", "amount": "249,90",
         "date": "3 Mart", "days": "5", "hours": "24"}


def _slots_of(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_same_seed_same_pairs_and_different_seed_different_pairs():
    assert support_pairs(40, seed=1) == support_pairs(40, seed=1)
    assert support_pairs(40, seed=1) != support_pairs(40, seed=2)


def test_splits_have_distinct_prompts_and_cover_every_topic():
    splits = support_splits(seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1200, "test": 200}
    prompts = [p["prompt"] for split in splits.values() for p in split]
    assert len(prompts) == len(set(prompts))
    assert len(topics()) >= 8
    assert all(set(p) == {"prompt", "chosen", "rejected"} for split in splits.values() for p in split)


def test_chosen_is_formal_and_rejected_informal_on_500_pairs():
    pairs = support_pairs(500, seed=7)
    assert Counter(formality(p["chosen"]) for p in pairs) == {"formal": 500}
    assert Counter(formality(p["rejected"]) for p in pairs) == {"informal": 500}
    assert all(p["chosen"] != p["rejected"] for p in pairs)


def _fragments():
    vocab = load_data("support")
    yield from vocab["greetings"]
    yield from vocab["closings"]
    for topic in vocab["topics"].values():
        yield from topic["replies"]


def test_every_template_carries_only_its_own_register():
    for pair in _fragments():
        if pair in load_data("support")["greetings"]:
            continue  # greetings may be neutral; the body that follows carries the register
        formal, informal = (formality_markers(pair[k].format(**SLOTS)) for k in ("formal", "informal"))
        assert formal["formal"] and not formal["informal"], (pair["formal"], formal)
        assert informal["informal"] and not informal["formal"], (pair["informal"], informal)


def test_greetings_never_carry_the_wrong_register():
    for pair in load_data("support")["greetings"]:
        assert formality(pair["formal"]) in ("formal", "unknown")
        assert formality(pair["informal"]) in ("informal", "unknown")


def test_product_slots_respect_topic_categories():
    products = load_data("products")["categories"]
    topic = load_data("support")["topics"]["garanti"]
    allowed = [tr_lower(noun) for name in topic["product_categories"] for noun in products[name]["nouns"]]
    prompts = [p["prompt"] for p in support_pairs(600, seed=2) if "garanti" in p["prompt"] or "bıraktı" in p["prompt"]]
    assert len(prompts) > 10
    for prompt in prompts:
        assert any(noun in tr_lower(prompt) for noun in allowed), prompt


def test_replies_only_refer_to_what_every_prompt_of_their_topic_mentions():
    for name, topic in load_data("support")["topics"].items():
        in_every_prompt = set.intersection(*(_slots_of(p) for p in topic["prompts"]))
        for reply in topic["replies"]:
            refs = _slots_of(reply["formal"]) & {"order", "product", "code"}
            assert refs <= in_every_prompt, (name, reply["formal"])
            assert _slots_of(reply["formal"]) == _slots_of(reply["informal"]), (name, reply)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Siparişiniz yarın kargoya verilecektir. Anlayışınız için teşekkür ederiz.", "formal"),
        ("Siparişin yarın kargoya verilecek. Anlayışın için sağ ol.", "informal"),
        ("Kodu sepette deneyebilirsin, hadi!", "informal"),
        ("Size nasıl yardımcı olabiliriz?", "formal"),
        ("Bu ürün için kargo ücretsizdir.", "unknown"),
        ("Kargo ücreti 49,90 TL olarak güncellendi.", "unknown"),
        ("Yarın için deniz kenarında yalnız bir ev olsun, kargo versin.", "unknown"),
        ("", "unknown"),
        ("Siparişiniz hazır, sen de gel.", "unknown"),  # one marker each: a tie
        ("İSTEDİĞİNİZ ÜRÜN STOKTA.", "formal"),  # Turkish upper case is lowered first
    ],
)
def test_formality_examples(text, expected):
    assert formality(text) == expected, formality_markers(text)


def test_formality_markers_are_reported_in_order():
    found = formality_markers("Teşekkür ederiz, siparişinizi aldık. Merak etme, sana yazacağız.")
    assert found["formal"] == ["teşekkür ederiz", "siparişinizi"]
    assert found["informal"] == ["merak etme", "sana"]
