"""Cross-field conflicts: every one known before weights load is reported by `ayar check`, all at once, with
the recipe line; the ones that used to surface only at training time included."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import RecipeError
from ayar.recipe import METHOD_NAMES, REFERENCE_METHODS, Recipe, load_recipe

runner = CliRunner()


def _adapter_run(folder, init_adapter=None):
    """A finished run folder as far as the recipe checks can tell: recipe.yaml and adapter/adapter_config.json."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": 8}), encoding="utf-8")
    model = {"path": "some/model", **({"init_adapter": str(init_adapter)} if init_adapter else {})}
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"model": model, "data": {"train": "t.jsonl"}}), "utf-8")
    return folder


def _check(path, *extra) -> list[str]:
    """`ayar check`'s problems (the CLI raises the RecipeError for its handler to print)."""
    result = runner.invoke(app, ["check", str(path), *extra])
    assert isinstance(result.exception, RecipeError), result.output
    return result.exception.problems


def test_check_reports_every_conflict_at_once_with_its_line(tmp_path):
    sft = _adapter_run(tmp_path / "sft")
    dpo = _adapter_run(tmp_path / "dpo", init_adapter=sft)  # itself started from sft's adapter
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""\
model:
  path: some/model
  quantization: nf4
  init_adapter: {dpo}
data:
  train: t.jsonl
method: dpo
adapter:
  type: full
preference:
  reference: adapter_disabled
  reference_quantization: nf4
orpo:
  beta: 0.2
""", encoding="utf-8")
    found = _check(path)
    expected = [
        "model.quantization needs adapter.type lora or dora: quantised weights cannot be fully fine-tuned (line 3)",
        "section `orpo` is set but method is 'dpo'; remove it or set method: orpo (line 13)",
        # merge is the default mode: the line is init_adapter's
        "model.init_adapter_mode merge cannot merge into a quantised base; use init_adapter_mode: continue (with "
        "preference.reference: precompute) or no quantization (line 4)",
        "preference.reference adapter_disabled needs an adapter; with adapter.type full use copy or precompute "
        "(line 11)",
        "preference.reference_quantization applies to reference: copy only (line 12)",
        "preference.reference_quantization loads the reference from model.path and cannot include "
        "model.init_adapter; use precompute instead (line 12)",
        f"model.init_adapter: {dpo} itself started from another adapter; chains of init adapters are not supported. "
        "Export that run with `ayar export RUN --format merged` and use the merged folder as model.path (line 4)",
    ]
    assert found == expected
    # Loading the recipe (as training and evaluation do) reports the same schema conflicts; the file checks
    # are `ayar check`'s (and train_from_recipe's) own.
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.problems == expected[:-1]


@pytest.mark.parametrize(("settings", "message"), [
    ({"model": {"quantization": "nf4", "init_adapter": "INIT"}},
     "model.init_adapter_mode merge cannot merge into a quantised base"),
    ({"method": "dpo", "adapter": {"type": "full"}, "preference": {"reference": "adapter_disabled"}},
     "preference.reference adapter_disabled needs an adapter"),
    ({"method": "kto", "model": {"init_adapter": "INIT"},
      "preference": {"reference": "copy", "reference_quantization": "int8"}},
     "preference.reference_quantization loads the reference from model.path and cannot include model.init_adapter"),
    ({"method": "dpo", "model": {"init_adapter": "CHAINED"}}, "chains of init adapters are not supported"),
    ({"model": {"init_adapter": "MISSING"}}, "is neither a PEFT adapter folder nor a run folder with adapter/"),
    ({"model": {"chat_template": "nowhere.jinja"}}, "model.chat_template:"),
])
def test_each_formerly_runtime_conflict_is_reported_by_check(tmp_path, settings, message):
    sft = _adapter_run(tmp_path / "sft")
    places = {"INIT": str(sft), "CHAINED": str(_adapter_run(tmp_path / "dpo", init_adapter=sft)),
              "MISSING": str(tmp_path / "missing")}
    raw = {"model": {"path": "some/model"}, "data": {"train": "t.jsonl"}}
    for key, value in settings.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update({k: places.get(v, v) for k, v in value.items()})
        else:
            raw[key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    (found,) = _check(path)
    assert message in found and "(line " in found
    fixed = runner.invoke(app, ["check", str(path), "--set", "model.init_adapter=null", "--set",
                                "preference.reference_quantization=none", "--set", "preference.reference=auto",
                                "--set", "model.chat_template=null"])
    assert fixed.exit_code == 0, fixed.output


def test_an_init_adapter_given_as_the_adapter_folder_of_a_chained_run_is_refused(tmp_path):
    sft = _adapter_run(tmp_path / "sft")
    dpo = _adapter_run(tmp_path / "dpo", init_adapter=sft)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": "m", "init_adapter": str(dpo / "adapter")},
                                    "data": {"train": "t.jsonl"}}), encoding="utf-8")
    (found,) = _check(path)
    assert "chains of init adapters are not supported" in found
    path.write_text(yaml.safe_dump({"model": {"path": "m", "init_adapter": str(sft / "adapter")},
                                    "data": {"train": "t.jsonl"}}), encoding="utf-8")
    assert runner.invoke(app, ["check", str(path)]).exit_code == 0


def test_a_recipe_built_in_code_gets_all_conflicts_in_one_error():
    with pytest.raises(ValidationError) as info:
        Recipe.model_validate({"model": {"path": "m", "quantization": "nf4"}, "data": {"train": "t"},
                               "adapter": {"type": "full"}, "kto": {}})
    text = str(info.value)
    assert "model.quantization needs adapter.type lora or dora" in text and "section `kto` is set" in text


def test_method_names_are_those_training_implements():
    from ayar.train.methods import METHODS

    assert list(METHODS) == list(METHOD_NAMES)
    assert [name for name, method in METHODS.items() if method.reference] == list(REFERENCE_METHODS)
