"""Memorisation audit: AUC, Min-K% and regurgitation by hand, and a tiny model trained on a planted canary."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from ayar.eval.canary import parse_template
from ayar.eval.memorisation import (
    TokenScores,
    encode,
    membership,
    memorisation_audit,
    min_k_percent,
    planted_canaries,
    read_items,
    regurgitation,
    roc_auc,
    score_sequences,
)
from helpers import COLOURS, ITEMS, write_jsonl

TEMPLATE = "Kayıtlı müşterinin T.C. kimlik numarası {tckn} olarak doğrulandı."

# ----------------------------------------------------------------------------- pure pieces


def test_roc_auc_by_hand():
    # 0.9 and 0.8 beat all three negatives; 0.3 beats 0.2 and 0.1: 8 of 9 pairs.
    assert roc_auc([0.9, 0.8, 0.3], [0.5, 0.2, 0.1]) == pytest.approx(8 / 9)
    # 1 beats 0, 0 (2); 2 ties 2 (0.5) and beats 0, 0 (2); 3 beats all (3): 7.5 of 9.
    assert roc_auc([1, 2, 3], [2, 0, 0]) == pytest.approx(7.5 / 9)
    assert roc_auc([1, 1], [1, 1, 1]) == 0.5
    assert roc_auc([0, 0], [1]) == 0.0
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_roc_auc_equals_brute_force_pair_counting():
    rng = random.Random(0)
    for _ in range(20):
        pos = [rng.randint(0, 9) for _ in range(rng.randint(1, 30))]  # small integers: many ties
        neg = [rng.randint(0, 12) for _ in range(rng.randint(1, 30))]
        pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
        assert roc_auc(pos, neg) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_min_k_percent_by_hand():
    values = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0]
    assert min_k_percent(values, 20) == pytest.approx(-9.5)  # the 2 lowest: -10, -9
    assert min_k_percent(values, 35) == pytest.approx(-9.0)  # floor(3.5) = 3: -10, -9, -8
    assert min_k_percent(values, 5) == pytest.approx(-10.0)  # at least one token
    assert min_k_percent(values, 100) == pytest.approx(-5.5)
    with pytest.raises(ValueError):
        min_k_percent([], 20)


def _scores(logprobs: list[float], greedy: list[bool] | None = None) -> TokenScores:
    return TokenScores(torch.tensor(logprobs), torch.tensor(greedy or [True] * len(logprobs)))


def test_membership_block_by_hand():
    train = [_scores([-0.1, -0.1, -0.7]), _scores([-0.2, -0.2, -0.2])]  # means -0.3, -0.2; lowest -0.7, -0.2
    held = [_scores([-1.0, -1.0, -1.0]), _scores([-0.5, -0.5, -0.2]), _scores([])]  # -1.0, -0.4; -1.0, -0.5
    result = membership(train, held, k=34)  # floor(3 * 0.34) = 1 token: the lowest
    # loss scores: both training means beat both held-out means -> 4 of 4 pairs
    assert result["loss_auc"] == pytest.approx(1.0)
    # min-k: -0.7 beats -1.0 only, -0.2 beats both -> 3 of 4 pairs
    assert result["min_k_auc"] == pytest.approx(0.75)
    assert (result["n_train"], result["n_heldout"], result["k"]) == (2, 2, 34)  # the empty record is left out
    assert result["mean_loss_train"] == pytest.approx(0.25) and result["mean_loss_heldout"] == pytest.approx(0.7)
    assert membership(train, [], k=20)["loss_auc"] is None


def test_regurgitation_by_hand():
    # prefix 2, continuation 3: tokens 2..4 are predicted at positions 1..3 of `greedy`.
    hit = _scores([0.0] * 5, [False, True, True, True, False])  # misses only outside the window
    miss = _scores([0.0] * 5, [True, True, False, True, True])
    short = _scores([0.0] * 3)  # 4 tokens < 2 + 3
    result = regurgitation([hit, miss, short], prefix_tokens=2, continuation_tokens=3)
    assert result == {"prefix_tokens": 2, "continuation_tokens": 3, "rate": 0.5, "n": 2, "skipped_short": 1}
    assert regurgitation([short], 2, 3)["rate"] is None


def test_read_items_and_planted_canaries(tmp_path):
    conv = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    pref = {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "c"}],
            "rejected": [{"role": "assistant", "content": "r"}]}
    write_jsonl(tmp_path / "train.jsonl", [conv, pref, {"text": "düz metin"}])
    items = read_items(tmp_path / "train.jsonl")
    assert items == [conv["messages"], pref["prompt"] + pref["chosen"], "düz metin"]
    assert planted_canaries(None, tmp_path / "train.jsonl") == (None, None)
    (tmp_path / "manifest.json").write_text('{"canaries": {"template": "{digits:3}", "values": ["123"]}}')
    entry, where = planted_canaries(None, tmp_path / "train.jsonl")
    assert entry["values"] == ["123"] and where == str(tmp_path / "manifest.json")


# ----------------------------------------------------------------------------- on a trained tiny model


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(COLOURS)} {rng.choice(ITEMS)} {rng.randint(2, 99)} liraya satıldı ve "
            f"{rng.choice(COLOURS)} kutuda gönderildi." for _ in range(n)]


@pytest.fixture(scope="module")
def trained(tiny_llama):
    """The tiny model fully fine-tuned for 60 steps (lr 3e-3) on 40 sentences plus one canary 20 times."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    template = parse_template(TEMPLATE)
    planted, unseen = template.sample(random.Random(1), 2)
    train, heldout = sentences(40, seed=0), sentences(40, seed=1)
    data = [tokenizer(s)["input_ids"] for s in train + [template.fill(planted)] * 20]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        batch = [data[i] for i in torch.randperm(len(data), generator=order)[:16].tolist()]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = labels[row, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer, train, heldout, planted, unseen


def test_score_sequences_matches_the_model_loss_and_ignores_batching(trained):
    model, tokenizer, train, *_ = trained
    sequences = [encode(tokenizer, s, 512) for s in train[:6]] + [encode(tokenizer, "kısa", 512)]
    batched = score_sequences(model, sequences, pad_id=tokenizer.pad_token_id, batch_size=4)
    for seq, got in zip(sequences, batched, strict=True):
        (alone,) = score_sequences(model, [seq], batch_size=1)
        torch.testing.assert_close(got.logprobs, alone.logprobs, atol=1e-5, rtol=1e-5)
        ids = torch.tensor([seq])
        with torch.no_grad():
            hf_mean_nll = model(input_ids=ids, labels=ids).loss  # HF shifts the labels itself
        assert -got.logprobs.mean() == pytest.approx(float(hf_mean_nll), abs=1e-5)


def test_trained_canary_is_exposed_and_an_unseen_one_is_not(trained):
    model, tokenizer, train, heldout, planted, unseen = trained
    result = memorisation_audit(model, tokenizer, train, heldout, canaries={"template": TEMPLATE,
                                "values": [planted, unseen]}, candidates=1000, controls=5,
                                prefix_tokens=6, continuation_tokens=10)
    c = result["canaries"]
    ceiling = math.log2(9e8)
    assert c["candidate_space_log2"] == pytest.approx(ceiling, abs=1e-4)
    # Recorded: the planted canary beats all 1000 candidates (29.75 bits, the ceiling); the value never trained
    # on scores 3.3 bits; the five controls [0.84, 2.21, 1.24, 3.78, 0.02] (chance: about 1 bit).
    assert c["exposures"][0] == pytest.approx(ceiling, abs=1e-3)
    assert c["exposures"][1] < 6.0
    assert sum(c["control_exposures"]) / 5 < 3.0 and max(c["control_exposures"]) < 8.0
    assert c["max"] == c["exposures"][0] and c["mean"] == pytest.approx(sum(c["exposures"]) / 2, abs=1e-4)
    # Training sentences are more likely than held-out ones of the same shape: recorded AUC 0.82 for both.
    m = result["membership"]
    assert m["n_train"] == 40 and m["n_heldout"] == 40
    assert m["loss_auc"] > 0.65 and m["min_k_auc"] > 0.65
    assert m["mean_loss_train"] < m["mean_loss_heldout"]
    # Tokens 6..15 ("liraya satıldı ve", the same in every sentence) follow greedily from every prefix.
    assert result["regurgitation"] == {"prefix_tokens": 6, "continuation_tokens": 10, "rate": 1.0, "n": 40,
                                       "skipped_short": 0}


def test_regurgitation_agrees_with_greedy_generation(trained):
    """The teacher-forced shortcut gives exactly the records that model.generate (greedy) reproduces."""
    model, tokenizer, train, heldout, *_ = trained
    sequences = [encode(tokenizer, s, 512) for s in train[:8] + heldout[:8]]
    scores = score_sequences(model, sequences, pad_id=tokenizer.pad_token_id)
    # Sentences are 34 tokens: colour, item, price digits (2-4), a fixed phrase (5-17), a second colour (18), ...
    outcomes: set[bool] = set()
    for prefix, continuation in ((2, 18), (6, 10), (2, 3), (17, 2)):
        shortcut = [bool(s.greedy[prefix - 1 : prefix + continuation - 1].all()) for s in scores]
        generated = []
        for seq in sequences:
            ids = torch.tensor([seq[:prefix]])
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=continuation, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            generated.append(out[0, prefix:].tolist() == seq[prefix : prefix + continuation])
        assert shortcut == generated, (prefix, continuation)
        rate = regurgitation(scores, prefix, continuation)["rate"]
        assert rate == pytest.approx(sum(generated) / len(generated), abs=1e-4)
        outcomes.update(generated)
    assert outcomes == {True, False}  # both occur, so the comparison means something


def test_conversations_are_scored_through_the_chat_template(trained):
    _, tokenizer, *_ = trained
    messages = [{"role": "user", "content": "merhaba"}, {"role": "assistant", "content": "selam"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert encode(tokenizer, messages, 512) == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert len(encode(tokenizer, messages, 5)) == 5


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_next_token_scores_equal_the_full_logits(tiny_llama, chunk):
    import torch
    from transformers import AutoModelForCausalLM

    from ayar.eval.memorisation import next_token_scores

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 9, 33, 12, 7, 0, 0], [4, 8, 15, 16, 23, 42, 3]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logprobs, greedy = next_token_scores(model, ids, mask, positions_per_chunk=chunk)
    expected = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(logprobs, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(greedy, logits.argmax(-1) == ids[:, 1:])
