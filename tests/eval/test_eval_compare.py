"""`ayar eval` end to end on a tiny trained run, and the pieces it is built from (data, prompts, config)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import DataError, RecipeError
from ayar.eval.compare import build_prompt, few_shot_turns, load_examples, section_for_run
from ayar.eval.config import EvalSection
from helpers import colour_conversations, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama):
    """A LoRA SFT run of a few steps on the colour task, plus a held-out test file beside train.jsonl."""
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    root = tmp_path_factory.mktemp("evalrun")
    write_jsonl(root / "train.jsonl", colour_conversations(40, seed=0))
    write_jsonl(root / "test.jsonl", colour_conversations(12, seed=7))
    recipe = {"model": {"path": str(tiny_llama), "dtype": "fp32"},
              "data": {"train": "train.jsonl", "max_length": 128},
              "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
              "train": {"learning_rate": 1e-2, "max_steps": 3, "micro_batch_size": 8, "precision": "fp32",
                        "tracking": "none", "save_every": 100},
              "output_dir": "run"}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train_from_recipe(load_recipe(root / "recipe.yaml"))
    return root / "run"


@pytest.mark.slow
def test_ayar_eval_writes_comparison_and_examples(run_dir):
    args = ["eval", str(run_dir), "--set", "n=5", "--set", "generation.max_new_tokens=6", "--set", "dtype=fp32",
            "--set", "eval.metrics=[exact_match, chrf, rouge_l, perplexity, json]", "--set", "few_shot=2",
            "--set", "bootstrap=200", "--set", "system_prompt=Kısa yanıt ver."]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = run_dir / "eval"
    comparison = json.loads((out / "comparison.json").read_text())
    # The default data is the test split beside data.train.
    assert comparison["dataset"] == str(run_dir.parent / "test.jsonl") and comparison["n"] == 5
    assert comparison["models"]["tuned"] == str(run_dir)
    assert comparison["models"]["base"].endswith("llama + 2-shot")
    generation = comparison["generation"]
    assert generation["max_new_tokens"] == 6 and generation["few_shot"] == 2 and generation["temperature"] == 0.0
    assert len(generation["few_shot_ids"]) == 2 and all(i.startswith("train.jsonl:") for i in generation["few_shot_ids"])
    names = [row["name"] for row in comparison["metrics"]]
    assert names == ["exact_match", "chrf", "rouge_l", "perplexity", "json_parse_rate", "field_accuracy[renk]",
                     "field_accuracy[tür]", "json_parse_rate_lenient", "field_accuracy_lenient[renk]",
                     "field_accuracy_lenient[tür]"]
    for row in comparison["metrics"]:
        assert set(row) == {"name", "description", "higher_is_better", "base", "tuned", "diff", "ci95"}
        assert row["diff"] == pytest.approx(row["tuned"] - row["base"])
        low, high = row["ci95"]
        assert low <= high
    ppl = comparison["metrics"][3]
    assert ppl["higher_is_better"] is False and 1 < ppl["tuned"] < 600 and 1 < ppl["base"] < 600
    assert comparison["classification"] is None

    examples = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == 5
    first = examples[0]
    assert set(first) == {"id", "prompt", "reference", "base", "tuned", "scores"}
    assert first["id"] == "test.jsonl:1"
    assert first["prompt"][0] == {"role": "system", "content": "Kısa yanıt ver."} and len(first["prompt"]) == 2
    assert isinstance(first["base"], str) and isinstance(first["tuned"], str)
    assert set(first["scores"]["tuned"]) >= {"exact_match", "chrf", "rouge_l", "perplexity", "json_parse_rate"}
    # Per-example perplexities pool back to the corpus value only through token counts, so just check their range.
    assert all(math.isfinite(e["scores"]["base"]["perplexity"]) for e in examples)
    assert "tuned - base" in result.output


@pytest.mark.slow
def test_ayar_eval_reports_bad_settings_without_a_traceback(run_dir, tmp_path):
    result = runner.invoke(app, ["eval", str(run_dir), "--set", "metrics=[blue]", "--set", "nn=3"])
    assert result.exit_code != 0
    assert isinstance(result.exception, RecipeError)
    assert "eval.metrics: unknown metric 'blue'; did you mean 'bleu'?" in str(result.exception)
    assert "eval.nn: unknown key; did you mean 'n'?" in str(result.exception)
    write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "soru"}]}])
    result = runner.invoke(app, ["eval", str(run_dir), "--data", str(tmp_path / "bad.jsonl")])
    assert isinstance(result.exception, DataError) and "bad.jsonl:1" in str(result.exception)


def test_examples_take_the_last_assistant_turn_as_reference(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [
        {"id": "a", "messages": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "bir"},
                                 {"role": "user", "content": "2"}, {"role": "assistant", "content": "iki"}]},
        {"messages": [{"role": "user", "content": "3"}, {"role": "assistant", "content": "üç"},
                      {"role": "user", "content": "devam"}]},
        {"messages": [{"role": "user", "content": "4"}, {"role": "assistant", "content": "dört"}]},
    ])
    first, second = load_examples(tmp_path / "d.jsonl", n=2)
    assert first.id == "a" and first.reference == "iki" and [m["content"] for m in first.prompt] == ["1", "bir", "2"]
    assert second.id == "d.jsonl:2" and second.reference == "üç" and second.prompt == [{"role": "user",
                                                                                       "content": "3"}]
    write_jsonl(tmp_path / "e.jsonl", [{"text": "x"}])
    with pytest.raises(DataError, match="e.jsonl:1: missing field `messages`"):
        load_examples(tmp_path / "e.jsonl")


def test_prompts_get_the_system_prompt_and_few_shot_turns(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(10, seed=3))
    turns, ids = few_shot_turns(tmp_path / "train.jsonl", 2, seed=0)
    assert [m["role"] for m in turns] == ["user", "assistant", "user", "assistant"]  # shots carry no system turn
    assert (turns, ids) == few_shot_turns(tmp_path / "train.jsonl", 2, seed=0)  # seeded
    prompt = [{"role": "system", "content": "eski"}, {"role": "user", "content": "soru"}]
    assert build_prompt(prompt, None, turns) == [prompt[0], *turns, prompt[1]]
    assert build_prompt(prompt, "yeni") == [{"role": "system", "content": "yeni"}, prompt[1]]
    assert build_prompt(prompt[1:], "yeni")[0] == {"role": "system", "content": "yeni"}
    with pytest.raises(Exception, match="11 examples asked for"):
        few_shot_turns(tmp_path / "train.jsonl", 11, seed=0)


def test_section_reads_the_run_recipe_and_overrides(tmp_path):
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"model": {"path": "m"}, "data": {"train": "t"},
                                                          "eval": {"n": 50, "metrics": ["bleu"]}}))
    section = section_for_run(tmp_path, ["n=7", "eval.judge={base_url: 'http://x/v1', model: j}"], data="d.jsonl")
    assert section.n == 7 and section.metrics == ["bleu"] and section.data == "d.jsonl"
    assert section.judge.model == "j" and section.judge.api_key_env == "OPENAI_API_KEY"
    assert section_for_run(tmp_path).n == 50
    with pytest.raises(RecipeError, match="needs schema_file"):
        section_for_run(tmp_path, ["metrics=[json_schema]"])
    with pytest.raises(RecipeError, match="label_field or label_regex"):
        section_for_run(tmp_path, ["metrics=[classification]"])
    with pytest.raises(RecipeError, match="set a baseline other than none"):
        section_for_run(tmp_path, ["baseline=none", "judge={base_url: u, model: m}"])
    assert EvalSection().resolved(tmp_path).data is None
    assert EvalSection(data="x.jsonl").resolved(tmp_path).data == str(tmp_path / "x.jsonl")


def test_rows_hold_both_values_the_difference_and_confusion_matrices():
    from ayar.eval.compare import classification_summary, metric_rows
    from ayar.eval.metrics import MetricInput, compute_scores

    section = EvalSection(metrics=["exact_match", "classification"], label_regex=r"(\w+)$")
    references = ["etiket olumlu", "etiket olumsuz", "etiket olumlu", "etiket olumsuz"]
    base = compute_scores(MetricInput(["olumlu", "olumlu", "olumlu", "olumlu"], references, [{}] * 4, section))
    tuned = compute_scores(MetricInput(["etiket olumlu", "olumsuz", "olumlu", "?"], references, [{}] * 4, section))
    rows = {r["name"]: r for r in metric_rows(base, tuned, resamples=300, seed=0)}
    # exact match: base 0/4, tuned 1/4 (only reply 1 equals its reference).
    assert (rows["exact_match"]["base"], rows["exact_match"]["tuned"], rows["exact_match"]["diff"]) == (0, 0.25, 0.25)
    low, high = rows["exact_match"]["ci95"]
    assert low == 0.0 and high <= 0.75
    # labels: base right on 1 and 3 (2/4); tuned right on 1, 2, 3 (3/4).
    assert rows["label_accuracy"]["diff"] == pytest.approx(0.25)
    summary = classification_summary(base, tuned)
    assert summary["labels"] == ["olumlu", "olumsuz", "(other)"]
    assert summary["confusion_base"] == [[2, 0, 0], [2, 0, 0], [0, 0, 0]]
    assert summary["confusion_tuned"] == [[2, 0, 0], [0, 1, 1], [0, 0, 0]]
    only_tuned = metric_rows(None, tuned, resamples=100, seed=0)
    assert only_tuned[0]["base"] is None and only_tuned[0]["diff"] is None and only_tuned[0]["ci95"] is None
