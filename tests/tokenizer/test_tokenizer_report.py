"""Turkish word splitting and tokenizer efficiency figures, derived by hand on a hand-built tokenizer."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from ayar.errors import AyarError
from ayar.tokenizer.report import compare, load_texts, measure, render, report
from ayar.tokenizer.words import fold, split_words

TEXT = "İstanbul'da gelemeyeceğim."


def test_turkish_words_keep_apostrophe_suffixes_and_skip_digits():
    assert split_words("İstanbul'da gelemeyeceğim, Ayşe’nin 3 kitabı; TBMM'ye 12'de.") == \
        ["İstanbul'da", "gelemeyeceğim", "Ayşe’nin", "kitabı", "TBMM'ye", "de"]
    assert split_words("'tırnak' içinde") == ["tırnak", "içinde"]  # quotes are not suffix apostrophes


def test_fold_is_turkish_lower_case():
    assert fold("İSTANBUL'DA") == fold("İstanbul’da") == "istanbul'da"
    assert fold("IŞIK") == "ışık" and fold("İzmir") == "izmir"


@pytest.fixture(scope="module")
def hand_tokenizer():
    """A Unigram tokenizer whose segmentations are known: whole pieces beat characters, ş falls back to bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["İstanbul", "'da", "gel", "emeye", "ceğim"]
    chars = sorted(set("İstanbul'da gelemeyeceğim.u") - {" "})
    vocab = [("<unk>", 0.0), ("<0xC5>", -20.0), ("<0x9F>", -20.0)] + [(c, -10.0) for c in chars] + \
        [(p, -1.0) for p in pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_figures_by_hand(hand_tokenizer):
    # "İstanbul'da" -> İstanbul|'da (2), "gelemeyeceğim" -> gel|emeye|ceğim (3), "." (1, not a word);
    # "şu" -> <0xC5>|<0x9F>|u (3: ş is not in the vocabulary and falls back to its two UTF-8 bytes).
    assert hand_tokenizer.tokenize(TEXT) == ["İstanbul", "'da", "gel", "emeye", "ceğim", "."]
    e = measure(hand_tokenizer, [TEXT, "şu"], name="hand")
    assert (e.words, e.tokens, e.word_tokens, e.chars) == (3, 9, 8, 28)
    assert e.fertility == round(8 / 3, 3)
    assert e.chars_per_token == round(28 / 9, 3)
    assert e.split_3plus == round(2 / 3, 4)
    assert e.byte_fallback_rate == round(2 / 9, 4)
    assert e.fragmented[0] == {"word": "gelemeyeceğim", "count": 1, "pieces": ["gel", "emeye", "ceğim"]}


def test_compare_weighs_tokens_by_parameters(hand_tokenizer):
    a = measure(hand_tokenizer, [TEXT], name="a")
    b = measure(hand_tokenizer, [TEXT + " " + TEXT], name="b")  # twice the tokens
    a.parameters, b.parameters = 300, 100  # but a third of the per-token cost
    compare([a, b])
    assert (a.token_multiplier, b.token_multiplier) == (1.0, 2.0)
    assert (a.cost_multiplier, b.cost_multiplier) == (1.5, 1.0)


def test_report_on_a_tiny_model_and_jsonl(tiny_llama, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "İstanbul'da güzel bir gün."},
                                             {"role": "assistant", "content": "Işık ılık."}]}) + "\n",
                    encoding="utf-8")
    assert load_texts(data) == ["İstanbul'da güzel bir gün.", "Işık ılık."]
    rep = report([str(tiny_llama), str(tiny_llama)], data)
    first = rep["results"][0]
    assert first["words"] == 6 and first["parameters"] > 0 and first["cost_multiplier"] == 1.0
    assert "İstanbul'da" in render(rep)


def test_bad_data_is_a_clear_error(tmp_path):
    with pytest.raises(AyarError, match="does not exist"):
        load_texts(tmp_path / "missing.txt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "a"}]}\n{not json\n', encoding="utf-8")
    with pytest.raises(AyarError, match="bad.jsonl"):
        load_texts(bad)


def test_data_inspect_shows_tokenizer_efficiency(tiny_llama, tmp_path):
    from ayar.data.card import render_inspection
    from ayar.data.prepare import inspect_file

    data = tmp_path / "d.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"İstanbul'da {i}. gün"},
                          {"role": "assistant", "content": "Gelemeyeceğim, kusura bakmayın."}]} for i in range(3)]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    rep = inspect_file(data, str(tiny_llama), pii_records=0)
    assert rep["tokenizer"]["words"] == 3 * 5 and rep["tokenizer"]["fertility"] > 1
    assert rep["tokenizer"] == measure(AutoTokenizer.from_pretrained(tiny_llama),
                                       [t for r in rows for t in (m["content"] for m in r["messages"])],
                                       name=str(tiny_llama), top=10).to_dict()
    assert "tokens per word" in render_inspection(rep)
