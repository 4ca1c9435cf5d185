"""RunFolder and model_spec: what a run folder, an adapter folder or a model path means to the one loader."""

from __future__ import annotations

import json

import pytest
import yaml

from ayar.errors import AyarError
from ayar.model.run_folder import RunFolder, model_spec


def _run(folder, *, kind="lora", init_adapter=None, mode="merge", quantization="none"):
    """A run folder as training leaves it (recipe.yaml and adapter/ or model/), without weights; kind None:
    training has not finished (no adapter/ or model/ yet)."""
    folder.mkdir(parents=True)
    model = {"path": "org/base", "revision": "abc123", "quantization": quantization,
             **({"init_adapter": str(init_adapter), "init_adapter_mode": mode} if init_adapter else {})}
    recipe = {"model": model, "data": {"train": str(folder / "data" / "train.jsonl")},
              "adapter": {"type": kind or "lora", "r": 4}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    if kind == "full":
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text("{}", encoding="utf-8")
    elif kind:
        (folder / "adapter").mkdir()
        config = {"r": 4, "use_dora": kind == "dora", "base_model_name_or_path": "org/base"}
        (folder / "adapter" / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_a_lora_run_is_base_plus_its_adapter(tmp_path):
    run = RunFolder.open(_run(tmp_path / "run", quantization="nf4"))
    assert (run.kind, run.lora_rank, run.is_adapter, run.base, run.base_revision) == ("lora", 4, True, "org/base",
                                                                                     "abc123")
    assert run.weights_dir == tmp_path / "run" / "adapter" and run.name == "run"
    assert run.run_manifest == tmp_path / "run" / "run_manifest.json"
    assert run.data_manifest == tmp_path / "run" / "data" / "manifest.json"
    spec = model_spec(tmp_path / "run")
    assert (spec.base, spec.revision, spec.quantization, spec.adapter, spec.init_adapter) == (
        "org/base", "abc123", "nf4", tmp_path / "run" / "adapter", None)
    assert spec.tokenizer == str(tmp_path / "run" / "adapter") and spec.run is not None


def test_an_init_adapter_is_merged_under_the_run_only_in_merge_mode(tmp_path):
    sft = _run(tmp_path / "sft")
    merged = model_spec(_run(tmp_path / "dpo", init_adapter=sft))
    assert merged.init_adapter == sft / "adapter" and merged.adapter == tmp_path / "dpo" / "adapter"
    continued = RunFolder.open(_run(tmp_path / "more", init_adapter=sft / "adapter", mode="continue"))
    assert continued.init_adapter == sft / "adapter" and continued.merged_init_adapter is None
    assert model_spec(continued).init_adapter is None  # the run's own adapter is the continued one


def test_a_full_fine_tune_loads_its_own_weights(tmp_path):
    run = RunFolder.open(_run(tmp_path / "full", kind="full"))
    assert (run.kind, run.is_adapter, run.lora_rank) == ("full", False, None)
    spec = model_spec(run)
    assert spec.base == spec.tokenizer == str(tmp_path / "full" / "model") and spec.adapter is None


def test_adapter_folders_and_model_paths(tmp_path):
    _run(tmp_path / "run", kind="dora")
    spec = model_spec(tmp_path / "run" / "adapter")  # an adapter folder names its base itself
    assert (spec.base, spec.adapter, spec.run) == ("org/base", tmp_path / "run" / "adapter", None)
    assert RunFolder.open(tmp_path / "run").kind == "dora"
    plain = model_spec("org/some-model")
    assert (plain.base, plain.tokenizer, plain.adapter) == ("org/some-model", "org/some-model", None)


def test_unfinished_and_missing_runs_are_clear_errors(tmp_path):
    _run(tmp_path / "half", kind=None)
    with pytest.raises(AyarError, match="did training finish"):
        RunFolder.open(tmp_path / "half")
    half = RunFolder.open(tmp_path / "half", finished=False)  # enough for an evaluation through endpoints
    assert half.kind is None and half.weights_dir is None and not half.is_adapter
    with pytest.raises(AyarError, match="did training finish"):
        model_spec(half)
    with pytest.raises(AyarError, match="not a run folder"):
        RunFolder.open(tmp_path)
