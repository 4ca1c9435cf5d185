"""Release gate expressions: parsing (never eval), lookup in report.json, static checks at recipe load."""

from __future__ import annotations

import pytest
import yaml

from ayar.errors import RecipeError
from ayar.govern.gates import evaluate, parse_condition

REPORT = {
    "comparison": {"metrics": [
        {"name": "exact_match", "base": 0.2, "tuned": 0.7, "diff": 0.5, "ci95": [0.41, 0.59]},
        {"name": "field_accuracy[category]", "base": 0.5, "tuned": 0.85, "diff": 0.35, "ci95": [-0.02, 0.7]},
        {"name": "perplexity", "base": 12.0, "tuned": 6.0, "diff": -6.0, "ci95": None},
    ]},
    "forgetting": {"base_ppl": 10.0, "tuned_ppl": 10.4, "relative_change": 0.04, "threshold": 0.1, "flag": False},
    "memorisation": {"canaries": {"max": 12.5, "mean": 3.0}, "membership": {"loss_auc": 0.55, "min_k_auc": 0.61},
                     "regurgitation": {"rate": 0.0}},
    "judge": None,
}


def test_parse_paths_operators_and_literals():
    c = parse_condition("tuned.field_accuracy[category] >= 0.9")
    assert (c.path, c.op, c.value) == (("tuned", "field_accuracy", "[category]"), ">=", 0.9)
    assert parse_condition("forgetting.flag == false").value is False
    assert parse_condition("diff.ci95.low>0").path == ("diff", "ci95", "low")
    assert parse_condition("judge.judge_model != 'x y'").value == "x y"
    assert parse_condition("memorisation.max_exposure_bits <= 1e1").value == 10.0


@pytest.mark.parametrize("text", ["tuned.exact_match >= ", "__import__('os').system('x') == 1",
                                  "tuned.exact_match >= 0.9 and 1", "weights.x > 1", "tuned.exact_match => 1",
                                  "tuned.exact_match >= other.path"])
def test_bad_conditions_are_refused(text):
    with pytest.raises(ValueError):
        parse_condition(text)


def test_evaluate_against_a_report():
    outcomes = evaluate([
        "tuned.field_accuracy[category] >= 0.9",  # 0.85: fails
        "diff.ci95.low > 0",  # primary exact_match: 0.41 holds
        "diff.field_accuracy[category].ci95.low > 0",  # -0.02: fails
        "forgetting.flag == false",
        "memorisation.max_exposure_bits <= 10",  # 12.5: fails
        "memorisation.membership_auc < 0.6",  # max(0.55, 0.61) = 0.61: fails
        "tuned.perplexity < 7",
        "judge.win_rate > 0.5",  # no judge: fails as not run
        "diff.perplexity.ci95.high < 0",  # no interval: fails, says so
    ], REPORT, primary="exact_match")
    passed = {o.condition: o.passed for o in outcomes}
    assert passed == {
        "tuned.field_accuracy[category] >= 0.9": False, "diff.ci95.low > 0": True,
        "diff.field_accuracy[category].ci95.low > 0": False, "forgetting.flag == false": True,
        "memorisation.max_exposure_bits <= 10": False, "memorisation.membership_auc < 0.6": False,
        "tuned.perplexity < 7": True, "judge.win_rate > 0.5": False, "diff.perplexity.ci95.high < 0": False}
    reasons = {o.condition: o.reason for o in outcomes}
    assert reasons["tuned.field_accuracy[category] >= 0.9"] == "value is 0.85"
    assert reasons["judge.win_rate > 0.5"] == "judge was not run in the latest evaluation"
    assert reasons["diff.perplexity.ci95.high < 0"] == "no 95% interval for perplexity"
    assert evaluate(["tuned.bleu > 1"], REPORT)[0].reason.startswith("metric 'bleu' was not measured")
    assert "no metric named" in evaluate(["diff.ci95.low > 0"], REPORT)[0].reason


def _recipe(tmp_path, gate, evaluation=None):
    from ayar.recipe import load_recipe

    raw = {"model": {"path": "org/model"}, "data": {"train": "train.jsonl"}, "gate": gate}
    if evaluation is not None:
        raw["eval"] = evaluation
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_recipe(tmp_path / "r.yaml")


def test_recipe_gate_is_checked_against_the_eval_settings(tmp_path):
    ok = _recipe(tmp_path, {"require": ["tuned.field_accuracy[category] >= 0.9", "forgetting.flag == false"]},
                 {"metrics": ["json"]})
    assert ok.gate.require[0].startswith("tuned.field_accuracy")
    with pytest.raises(RecipeError) as err:
        _recipe(tmp_path, {"require": ["tuned.field_accuracy[category] >= 0.9", "memorisation.max_exposure_bits < 5",
                                       "diff.ci95.low > 0"]},
                {"metrics": ["exact_match"], "memorisation": {"enabled": False}})
    text = str(err.value)
    assert "metric 'field_accuracy[category]' is not measured by eval.metrics (exact_match)" in text
    assert "eval.memorisation.enabled is false" in text
    assert "names no metric" in text
    with pytest.raises(RecipeError, match="gate.require"):
        _recipe(tmp_path, {"require": ["tuned.exact_match >>= 1"]})
