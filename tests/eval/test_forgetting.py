"""Forgetting guard: the flag rule, perplexity against the model's own loss, and the adapter switch."""

from __future__ import annotations

import math

import pytest
import torch

from ayar.errors import AyarError
from ayar.eval.forgetting import (
    ForgettingSection,
    forgetting_check,
    general_texts,
    judge_forgetting,
    perplexity,
    windows,
)


@pytest.mark.parametrize(("tuned", "change", "flag"), [
    (11.5, 0.15, True),  # 15% worse than base 10 > 10%
    (10.9, 0.09, False),
    (11.0, 0.10, False),  # exactly at the threshold is not above it
    (8.0, -0.20, False),  # better
])
def test_flag_rule(tuned, change, flag):
    result = judge_forgetting(10.0, tuned, 0.10)
    assert result["relative_change"] == pytest.approx(change)
    assert result["flag"] is flag and result["threshold"] == 0.10
    assert (result["base_ppl"], result["tuned_ppl"]) == (10.0, tuned)


def test_bundled_texts_and_a_user_file(tmp_path):
    name, texts = general_texts()
    assert name == "bundled: general_tr.txt + general_en.txt"
    assert len(texts) == 20 and all(len(t) > 150 for t in texts)  # ten paragraphs in each language
    assert any("ğ" in t and "ı" in t for t in texts) and any(" the " in t for t in texts)
    (tmp_path / "mine.txt").write_text("birinci belge\nikinci satır\n\n\nikinci belge\n", encoding="utf-8")
    assert general_texts(tmp_path / "mine.txt") == (str(tmp_path / "mine.txt"), ["birinci belge\nikinci satır",
                                                                                 "ikinci belge"])
    assert ForgettingSection().threshold == 0.10


def test_windows_split_long_sequences():
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a lone last token scores nothing


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny base, and the same base + a LoRA adapter trained 30 steps on one narrow sentence."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ayar.model.tiny import build_tiny_model
    from helpers import corpus

    # init_std 0.1: large enough embeddings for an adapter to move the logits (see build_tiny_model).
    folder = build_tiny_model(tmp_path_factory.mktemp("forget") / "tiny", corpus(), vocab_size=512, hidden_size=64,
                              intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1, init_std=0.1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    torch.manual_seed(0)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    ids = torch.tensor([tokenizer("kırmızı çanta kırmızı çanta kırmızı çanta kırmızı çanta")["input_ids"]] * 8)
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        loss = tuned(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return base, tuned.eval(), tokenizer


def test_perplexity_is_exp_of_the_models_mean_loss(models):
    base, _, tokenizer = models
    text = "İstanbul'da güzel bir gün. Işık, ılık rüzgâr ve çay."
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        loss = base(input_ids=ids, labels=ids).loss
    assert perplexity(base, tokenizer, [text]) == pytest.approx(math.exp(float(loss)), rel=1e-5)
    # Several texts: token-weighted, i.e. exp of the total NLL over all scored tokens.
    texts = [text, "The quick brown fox jumps over the lazy dog.", "mavi çanta"]
    total = count = 0.0
    for t in texts:
        ids = torch.tensor([tokenizer(t)["input_ids"]])
        with torch.no_grad():
            n = ids.shape[1] - 1
            total += float(base(input_ids=ids, labels=ids).loss) * n
        count += n
    assert perplexity(base, tokenizer, texts, batch_size=2) == pytest.approx(math.exp(total / count), rel=1e-5)
    with pytest.raises(AyarError):
        perplexity(base, tokenizer, ["a"])  # one token: nothing to score


def test_adapter_switched_off_gives_the_base_and_the_flag_warns(models, capsys):
    base, tuned, tokenizer = models
    name, texts = general_texts()
    texts = texts[:4]
    separate = forgetting_check(base, tuned, tokenizer, texts, 0.10, dataset=name)
    shared = forgetting_check(None, tuned, tokenizer, texts, 0.10, dataset=name)  # adapter disabled for the base
    assert shared == separate
    assert set(shared) == {"dataset", "base_ppl", "tuned_ppl", "relative_change", "threshold", "flag"}
    assert shared["base_ppl"] == pytest.approx(perplexity(base, tokenizer, texts), rel=1e-4)
    # Recorded: perplexity 681.5 -> 1237.9 (+81.6%) after the narrow tuning, far above the 10% threshold.
    assert shared["relative_change"] > 0.4 and shared["flag"] is True
    assert "warning: forgetting" in capsys.readouterr().err
    calm = forgetting_check(base, base, tokenizer, texts, 0.10)
    assert calm["relative_change"] == 0.0 and calm["flag"] is False and calm["dataset"] == "custom"
    with pytest.raises(AyarError, match="no adapter"):
        forgetting_check(None, base, tokenizer, texts)
