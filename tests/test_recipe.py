"""Recipe validation: every problem reported at once, with its path and line."""

from __future__ import annotations

import pytest

from ayar.errors import RecipeError
from ayar.recipe import apply_override, load_recipe, validate_recipe
from ayar.recipe_doc import reference_markdown, starter_recipe

MINIMAL = {"model": {"path": "some/model"}, "data": {"train": "train.jsonl"}}


def write(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(raw: dict) -> list[str]:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    return info.value.problems


def test_minimal_recipe_gets_defaults():
    recipe = validate_recipe(MINIMAL)
    assert recipe.method == "sft"
    assert recipe.adapter.type == "lora" and recipe.adapter.r == 16
    assert recipe.train.scheduler == "cosine"


def test_unknown_key_suggests_the_close_one():
    found = problems({**MINIMAL, "train": {"learnig_rate": 1e-4}})
    assert len(found) == 1
    assert found[0].startswith("train.learnig_rate: unknown key; did you mean 'learning_rate'?")


def test_unknown_top_level_section():
    found = problems({**MINIMAL, "adaptor": {"r": 8}})
    assert "adaptor: unknown key; did you mean 'adapter'?" in found[0]


def test_range_error_names_path_and_value():
    assert problems({**MINIMAL, "adapter": {"r": 0}}) == ["adapter.r: must be > 0, got 0"]


def test_wrong_type():
    (found,) = problems({**MINIMAL, "train": {"micro_batch_size": "four"}})
    assert found.startswith("train.micro_batch_size: input should be a valid integer")
    assert "'four'" in found


def test_bad_choice_lists_the_choices():
    (found,) = problems({**MINIMAL, "train": {"scheduler": "cosin"}})
    assert "train.scheduler: must be one of 'cosine', 'linear' or 'constant', got 'cosin'" == found


def test_unknown_method_suggests():
    (found,) = problems({**MINIMAL, "method": "sftt"})
    assert "unknown method 'sftt'; did you mean 'sft'?" in found


def test_all_errors_reported_at_once_with_lines(tmp_path):
    path = write(tmp_path, """\
model:
  path: some/model
data:
  train: train.jsonl
adapter:
  r: 0
  dropout: 1.5
train:
  learning_rate: -1
  epoch: 3
""")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    found = info.value.problems
    assert len(found) == 4, found
    assert "adapter.r: must be > 0, got 0 (line 6)" in found
    assert "adapter.dropout: must be < 1.0, got 1.5 (line 7)" in found
    assert "train.learning_rate: must be > 0.0, got -1 (line 9)" in found
    assert any(p.startswith("train.epoch: unknown key; did you mean 'epochs'?") and p.endswith("(line 10)")
               for p in found)
    assert str(path) in str(info.value)


def test_missing_required_fields():
    found = problems({})
    assert "model: required, but missing" in found
    assert "data: required, but missing" in found


def test_overrides_parse_yaml_values(tmp_path):
    path = write(tmp_path, "model:\n  path: m\ndata:\n  train: t.jsonl\n")
    recipe = load_recipe(path, ["train.learning_rate=1e-4", "adapter.target_modules=[q_proj, v_proj]",
                                "train.max_steps=7", "data.val=v.jsonl"])
    assert recipe.train.learning_rate == pytest.approx(1e-4)
    assert recipe.adapter.target_modules == ["q_proj", "v_proj"]
    assert recipe.train.max_steps == 7
    assert recipe.data.val == str((tmp_path / "v.jsonl").resolve())


def test_override_errors():
    raw = {"model": {"path": "m"}}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_override(raw, "train.learning_rate")
    with pytest.raises(ValueError, match="not a section"):
        apply_override(raw, "model.path.x=1")


def test_bad_override_reported(tmp_path):
    path = write(tmp_path, "model:\n  path: m\ndata:\n  train: t.jsonl\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path, ["adapter.r=-3"])
    assert info.value.problems == ["adapter.r: must be > 0, got -3"]


def test_relative_paths_resolve_against_the_recipe(tmp_path):
    (tmp_path / "tiny").mkdir()
    path = write(tmp_path, "model:\n  path: tiny\ndata:\n  train: d/train.jsonl\noutput_dir: out\n")
    recipe = load_recipe(path)
    assert recipe.model.path == str((tmp_path / "tiny").resolve())
    assert recipe.data.train == str((tmp_path / "d/train.jsonl").resolve())
    assert recipe.output_dir == str((tmp_path / "out").resolve())
    assert load_recipe(write(tmp_path, "model:\n  path: Qwen/Qwen2.5-0.5B\ndata:\n  train: t.jsonl\n")
                       ).model.path == "Qwen/Qwen2.5-0.5B"


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="line 3: not valid YAML"):
        load_recipe(write(tmp_path, "model:\n  path: [unclosed\n"))
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))


def test_starter_recipe_is_valid_and_complete(tmp_path):
    recipe = load_recipe(write(tmp_path, starter_recipe()))
    assert recipe.model.path == "Qwen/Qwen2.5-0.5B-Instruct"
    # every field of every section appears in the starter, with a comment above it
    text = starter_recipe()
    for section in ("model", "data", "adapter", "train"):
        for key in type(getattr(recipe, section)).model_fields:
            assert f"  {key}:" in text


def test_readme_reference_matches_schema():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- recipe-reference:start -->\n", "<!-- recipe-reference:end -->"
    assert start in readme and end in readme, "README lacks the recipe reference markers"
    section = readme.split(start, 1)[1].split(end, 1)[0]
    assert section == reference_markdown(), "README recipe reference is stale: run `python -m ayar.recipe_doc`"


def test_did_you_mean_inside_optional_and_list_sections():
    found = problems({**MINIMAL, "prepare": {"sources": [{"path": "a.jsonl", "formt": "auto"}]}})
    assert any("prepare.sources.0.formt: unknown key; did you mean 'format'?" in p for p in found), found
