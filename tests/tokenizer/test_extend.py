"""Vocabulary extension: old ids and old tokenisation kept, mean-of-pieces rows, round trip, adapter training."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ayar.errors import AyarError
from ayar.tokenizer.extend import EXTENSION_FILE, extend, read_extension
from helpers import corpus

HELDOUT = [
    "Yarın sabah erkenden yola çıkacağız, akşama kadar gelemeyeceğim.",
    "Kırmızı renkli güzel bir masa aldık; İstanbul'da teslim edilecekmiş.",
    "Ürünün rengini ve türünü söyleyebilir misiniz?",
    "The quick brown fox jumps over the lazy dog.",
    "Fiyat: 1.299,90 TL (KDV dahil), sipariş no 2026-000123.",
]
ENGLISH = ["The quick brown fox jumps over the lazy dog.", "Summarise it in one sentence, please!", "x y z 123"]


def passages() -> list[str]:
    text = resources.files("ayar.eval").joinpath("data/general_tr.txt").read_text(encoding="utf-8")
    return [p for p in text.splitlines() if p.strip()]


def turkish_corpus() -> list[str]:
    return corpus() + passages()


@pytest.fixture(scope="module")
def extended(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("extend")
    (root / "corpus.txt").write_text("\n".join(turkish_corpus()), encoding="utf-8")
    (root / "heldout.txt").write_text("\n".join(HELDOUT), encoding="utf-8")
    summary = extend(str(tiny_llama), root / "corpus.txt", 150, root / "ext", heldout=root / "heldout.txt")
    return root / "ext", summary


def expand(ids: list[int], pieces: dict[int, list[int]]) -> list[int]:
    return [p for i in ids for p in (pieces[i] if i in pieces else [i])]


def test_old_ids_unchanged_and_new_ones_appended(tiny_llama, extended):
    folder, summary = extended
    base, ext = AutoTokenizer.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(folder)
    old, new = base.get_vocab(), ext.get_vocab()
    assert all(new[token] == i for token, i in old.items())
    added = {t: i for t, i in new.items() if t not in old}
    assert len(added) == summary["added"] == 150
    assert sorted(added.values()) == list(range(len(old), len(old) + 150))


def test_extended_tokenisation_is_the_base_one_with_pieces_joined(tiny_llama, extended):
    """For every text, expanding each new token into the base pieces it replaces gives the base's ids exactly;
    so a text that uses no new token is tokenised exactly as before."""
    folder, summary = extended
    base, ext = AutoTokenizer.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(folder)
    pieces = {t["id"]: t["pieces"] for t in read_extension(folder)["tokens"]}
    uses_new, without = 0, []
    for text in HELDOUT + ENGLISH + passages():
        ids = ext(text, add_special_tokens=False)["input_ids"]
        assert expand(ids, pieces) == base(text, add_special_tokens=False)["input_ids"]
        assert ext.decode(ids) == text
        if any(i in pieces for i in ids):
            uses_new += 1
        else:
            without.append(text)
    assert uses_new >= len(passages()) + 2  # the invariant is exercised on texts that use new tokens
    assert without  # and on some that do not: those are tokenised exactly as before, special tokens included
    for text in without:
        assert ext(text)["input_ids"] == base(text)["input_ids"]
    assert summary["heldout"]["tokenised_as_before"] == summary["heldout"]["without_new_tokens"] >= 1
    assert summary["after"]["tokens"] < summary["before"]["tokens"]


def test_logits_for_text_without_new_tokens_equal_the_base(tiny_llama, extended):
    folder, _ = extended
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny_llama)(" ".join(ENGLISH))["input_ids"]])  # old ids only
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    ext = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        a, b = base(input_ids=ids).logits, ext(input_ids=ids).logits
    # Every old token's logit is unchanged (rows past the base tokenizer were unused padding, now new tokens).
    old = len(AutoTokenizer.from_pretrained(tiny_llama))
    assert b.shape[-1] > a.shape[-1] > old
    torch.testing.assert_close(b[..., :old], a[..., :old], rtol=0, atol=1e-5)


def test_new_rows_are_the_mean_of_their_pieces(tiny_llama, extended):
    folder, _ = extended
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).get_input_embeddings().weight
    ext = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).get_input_embeddings().weight
    old = len(AutoTokenizer.from_pretrained(tiny_llama))
    torch.testing.assert_close(ext[:old], base[:old], rtol=0, atol=0)
    tokens = read_extension(folder)["tokens"]
    assert max(len(t["pieces"]) for t in tokens) >= 3
    for t in tokens:
        torch.testing.assert_close(ext[t["id"]], base[t["pieces"]].mean(0), rtol=0, atol=1e-6)


def test_untied_output_rows_are_initialised_too(tiny_llama, tmp_path):
    untied = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32, tie_word_embeddings=False)
    torch.manual_seed(0)
    untied.lm_head.weight.data = torch.randn_like(untied.lm_head.weight) * 0.05
    untied.save_pretrained(tmp_path / "untied")
    AutoTokenizer.from_pretrained(tiny_llama).save_pretrained(tmp_path / "untied")
    (tmp_path / "c.txt").write_text("\n".join(turkish_corpus()), encoding="utf-8")
    extend(str(tmp_path / "untied"), tmp_path / "c.txt", 20, tmp_path / "ext")
    ext = AutoModelForCausalLM.from_pretrained(tmp_path / "ext", dtype=torch.float32)
    assert ext.lm_head.weight.data_ptr() != ext.get_input_embeddings().weight.data_ptr()
    for t in read_extension(tmp_path / "ext")["tokens"]:
        torch.testing.assert_close(ext.lm_head.weight[t["id"]], untied.lm_head.weight[t["pieces"]].mean(0),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(ext.get_input_embeddings().weight[t["id"]],
                                   untied.get_input_embeddings().weight[t["pieces"]].mean(0), rtol=0, atol=1e-6)


def test_refuses_to_overwrite_and_bad_arguments(tiny_llama, extended, tmp_path):
    folder, _ = extended
    with pytest.raises(AyarError, match="not empty"):
        extend(str(tiny_llama), tmp_path / "c.txt", 10, folder)
    (tmp_path / "c.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(AyarError, match="too small|nothing to add"):
        extend(str(tiny_llama), tmp_path / "c.txt", 10, tmp_path / "o")
    assert (folder / EXTENSION_FILE).is_file()
    assert json.loads((folder / EXTENSION_FILE).read_text())["base_model"] == str(tiny_llama)
