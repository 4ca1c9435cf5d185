"""Token counts from sampled files and the simulated micro-batch stream."""

from __future__ import annotations

from ayar.model.load import load_tokenizer
from ayar.plan.data import profile_file, simulate
from ayar.recipe import Recipe
from ayar.train.batching import padding_fraction
from helpers import colour_conversations, write_jsonl


def _recipe(path) -> Recipe:
    return Recipe.model_validate({"model": {"path": "m"}, "data": {"train": str(path), "max_length": 128}})


def test_sampled_token_count_within_its_stated_error(tiny_llama, tmp_path):
    records = colour_conversations(1500, seed=3)
    for i, r in enumerate(records):  # vary lengths so the error is not trivially zero
        r["messages"][1]["content"] += " uzun" * (i % 17)
    write_jsonl(tmp_path / "big.jsonl", records)
    tok = load_tokenizer(str(tiny_llama))
    full = profile_file(str(tmp_path / "big.jsonl"), tok, _recipe(tmp_path / "big.jsonl"))
    sampled = profile_file(str(tmp_path / "big.jsonl"), tok, _recipe(tmp_path / "big.jsonl"), sample=200)
    assert not full.sampled and full.examples == 1500
    assert sampled.sampled and sampled.records == 1500 and len(sampled.rows) == 200
    assert 0 < sampled.rel_error < 0.2
    assert abs(sampled.tokens - full.tokens) <= sampled.rel_error * full.tokens


def test_simulated_padding_equals_the_loops(tiny_llama, tmp_path):
    from ayar.train.methods import sft_examples

    records = colour_conversations(100, seed=4)
    for i, r in enumerate(records):
        r["messages"][2]["content"] += " tamam" * (i % 9)
    write_jsonl(tmp_path / "d.jsonl", records)
    recipe = _recipe(tmp_path / "d.jsonl")
    examples, _ = sft_examples(str(tmp_path / "d.jsonl"), load_tokenizer(str(tiny_llama)), recipe.data)
    profile = profile_file(str(tmp_path / "d.jsonl"), load_tokenizer(str(tiny_llama)), recipe)
    for grouped in (False, True):
        lengths = [len(e.input_ids) for e in examples] if grouped else None
        expected = padding_fraction(examples, 8, 42, lengths, batches=13)
        stream = simulate(profile, 8, 1, 13, 42, grouped)
        assert abs(stream.padding - expected) < 1e-12
        assert stream.largest()[1] == max(len(e.input_ids) for e in examples) or grouped
