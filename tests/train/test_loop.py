"""The training loop: token-level loss, exact gradient accumulation, target-only logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from ayar.chat.tokenize import EncodedExample
from ayar.model.adapters import attach_adapter
from ayar.recipe import AdapterSection, TrainSection
from ayar.train.batching import collate, micro_batches
from ayar.train.loop import fit, total_steps
from ayar.train.losses import IGNORE, TargetLoss


def varied_examples(n: int, vocab: int, seed: int = 0) -> list[EncodedExample]:
    """Sequences of lengths 5..40 with a prompt part (no loss) and a completion part."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 5 + (i * 7) % 36
        ids = torch.randint(3, vocab, (length,), generator=g).tolist()
        prompt = length // 2
        out.append(EncodedExample(ids, [IGNORE] * prompt + ids[prompt:]))
    return out


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.slow
def test_target_loss_equals_transformers_loss(fixture, request):
    model = AutoModelForCausalLM.from_pretrained(request.getfixturevalue(fixture), dtype=torch.float32)
    examples = varied_examples(6, model.config.vocab_size)
    batch = collate(examples, pad_id=0)
    loss_sum, n = TargetLoss(model)(**batch)
    reference = model(**batch).loss  # transformers shifts and averages over labels != -100
    expected_n = sum(sum(1 for t in e.labels[1:] if t != IGNORE) for e in examples)
    assert int(n) == expected_n
    torch.testing.assert_close(loss_sum / n, reference, atol=1e-6, rtol=1e-6)


def test_micro_batches_reshuffle_per_epoch_and_repeat_with_seed():
    a = micro_batches(10, 4, seed=3)
    first = [next(a) for _ in range(6)]  # two epochs of [4, 4, 2]
    assert [len(b) for b in first] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(first[:3], [])) == list(range(10))
    assert sum(first[:3], []) != sum(first[3:], [])  # the second epoch has its own order
    b = micro_batches(10, 4, seed=3)
    assert [next(b) for _ in range(6)] == first


def test_total_steps():
    cfg = TrainSection(micro_batch_size=4, gradient_accumulation_steps=2, epochs=2)
    assert total_steps(17, cfg) == 2 * 3  # ceil(17 / 8) per epoch
    assert total_steps(17, TrainSection(max_steps=5)) == 5


def _train(model_dir, examples, micro: int, accum: int, steps: int = 3):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = attach_adapter(model, AdapterSection(r=4, alpha=8, dropout=0.0))
    for name, p in model.named_parameters():  # LoRA B starts at zero; give it a value so A gets gradients too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02, generator=torch.Generator().manual_seed(1))
    cfg = TrainSection(micro_batch_size=micro, gradient_accumulation_steps=accum, max_steps=steps,
                       learning_rate=1e-2, warmup_ratio=0.0, precision="fp32", seed=5, log_every=1)
    result = fit(model, examples, cfg, pad_id=0)
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return result, weights


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch(tiny_llama):
    """8 micro-batches of 1 with accumulation == 1 batch of 8, with sequences of different lengths."""
    examples = varied_examples(8, 384, seed=2)
    big, w_big = _train(tiny_llama, examples, micro=8, accum=1)
    small, w_small = _train(tiny_llama, examples, micro=1, accum=8)
    assert big.steps == small.steps == 3
    for a, b in zip(big.history, small.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    assert big.history[0]["loss"] > big.history[-1]["loss"]  # it did learn
    for name in w_big:
        torch.testing.assert_close(w_big[name], w_small[name], atol=1e-5, rtol=0)


def test_mean_of_means_would_differ(tiny_llama):
    """The invariance above is not vacuous: averaging per-example means gives another loss."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).requires_grad_(False)
    examples = varied_examples(8, 384, seed=2)
    loss_model = TargetLoss(model)
    token_level = loss_model(**collate(examples, 0))
    means = [loss_model(**collate([e], 0)) for e in examples]
    mean_of_means = sum(s / n for s, n in means) / len(means)
    assert abs(float(token_level[0] / token_level[1]) - float(mean_of_means)) > 1e-3


def test_packed_row_gives_each_example_its_own_loss(tiny_llama):
    from ayar.train.batching import pack

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).requires_grad_(False)
    loss_model = TargetLoss(model)
    examples = varied_examples(3, 384, seed=7)
    alone = [loss_model(**collate([e], 0)) for e in examples]
    (row,) = pack(examples, max_length=200)
    assert len(row.input_ids) == sum(len(e.input_ids) for e in examples)
    packed_sum, packed_n = loss_model(**collate([row], 0))
    assert int(packed_n) == sum(int(n) for _, n in alone)
    torch.testing.assert_close(packed_sum, sum(s for s, _ in alone), atol=1e-4, rtol=1e-5)
    # per example: pack one example with a neighbour that carries no targets
    for ex, (s, n) in zip(examples, alone, strict=True):
        filler = EncodedExample(list(range(10, 30)), [IGNORE] * 20)
        (mixed,) = pack([filler, ex], max_length=200)
        got_s, got_n = loss_model(**collate([mixed], 0))
        assert int(got_n) == int(n)
        torch.testing.assert_close(got_s, s, atol=1e-5, rtol=1e-5)
    # without the position restarts the examples would see each other: the test can fail
    joined = EncodedExample(row.input_ids, row.labels)
    assert abs(float(loss_model(**collate([joined], 0))[0]) - float(packed_sum)) > 1e-3


def test_length_grouping_cuts_padding_and_keeps_every_example():
    from ayar.train.batching import padding_fraction

    examples = varied_examples(256, 384, seed=1)
    lengths = [len(e.input_ids) for e in examples]
    epoch = [next(s) for s in [micro_batches(256, 8, seed=0, lengths=lengths)] for _ in range(32)]
    assert sorted(i for b in epoch for i in b) == list(range(256))
    grouped = padding_fraction(examples, 8, 0, lengths, batches=32)
    plain = padding_fraction(examples, 8, 0, None, batches=32)
    assert grouped < 0.05 < plain
    # a resumed stream continues exactly where it was
    full = micro_batches(256, 8, seed=0, lengths=lengths)
    seen = [next(full) for _ in range(45)]
    assert [next(micro_batches(256, 8, seed=0, lengths=lengths, start=40)) for _ in range(1)] == [seen[40]]


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llama):
    grads = []
    for checkpointing in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        loss_sum, n = TargetLoss(model)(**collate(varied_examples(4, 384), 0))
        (loss_sum / n).backward()
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
