"""`ayar plan` end to end, the measurements `ayar train` records, calibration, and the pre-flight check."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError
from ayar.plan.catalogue import load_catalogue

runner = CliRunner()


def test_plan_text_and_json_for_every_device(sft_recipe, monkeypatch, tmp_path):
    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    recipe = sft_recipe()
    text = runner.invoke(app, ["plan", recipe, "--gpu", "all"])
    assert text.exit_code == 0, text.output
    for name in load_catalogue():
        assert name in text.output
    assert "106,816 parameters" in text.output and "advice" in text.output
    out = runner.invoke(app, ["plan", recipe, "--gpu", "H100", "--json"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.output)
    assert plan["model"]["total_parameters"] == 106_816
    assert plan["data"]["examples"] == 64 and not plan["data"]["sampled"]
    (h100,) = plan["devices"]
    assert h100["device"] == "H100-80GB" and h100["status"] == "fits" and h100["max_micro_batch"] >= 4
    assert abs(sum(h100["as_written"]["memory_bytes"].values()) - h100["as_written"]["peak_memory_bytes"]) < 10
    assert h100["as_written"]["cost_usd"][0] < h100["as_written"]["cost_usd"][1]


def test_unknown_gpu_names_the_catalogue(sft_recipe):
    out = runner.invoke(app, ["plan", sft_recipe(), "--gpu", "TPU-v9"])
    assert out.exit_code != 0
    assert "RTX-4090" in str(out.exception) or "RTX-4090" in out.output


def test_user_catalogue_adds_a_device(sft_recipe, monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / "plan").mkdir(parents=True)
    (home / "plan" / "gpus.yaml").write_text("devices:\n  L4-24GB: {memory_gib: 24, peak_tflops_bf16: 121, "
                                             "price_per_hour: [0.5, 0.9]}\n")
    monkeypatch.setenv("AYAR_HOME", str(home))
    assert load_catalogue()["L4-24GB"].price_per_hour == (0.5, 0.9)
    (home / "plan" / "gpus.yaml").write_text("devices:\n  L4-24GB: {memory_gib: 24}\n")
    with pytest.raises(AyarError, match="L4-24GB"):
        load_catalogue()


@pytest.mark.slow
def test_train_records_measurements_and_plan_compares(sft_recipe, monkeypatch, tmp_path):
    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    recipe = sft_recipe()
    result = runner.invoke(app, ["train", recipe])
    assert result.exit_code == 0, result.output
    assert "plan: peak memory" in result.output  # the pre-flight line
    m = json.loads((tmp_path / "run" / "summary.json").read_text())["measured"]
    assert m["peak_memory_bytes"] > 50 * 2**20 and m["tokens_per_s"] > 0 and m["step_cpu_seconds"] > 0
    assert 0 < m["mfu"] < 1 and m["useful_flops"] <= m["flops"]
    out = runner.invoke(app, ["plan", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    assert "predicted" in out.output and "measured" in out.output

    # two measured runs of different shapes calibrate the CPU class
    second = sft_recipe(train={"micro_batch_size": 8, "max_steps": 3}, data={"max_length": 64}, output_dir="run2")
    assert runner.invoke(app, ["train", second]).exit_code == 0
    cal = runner.invoke(app, ["plan", "--calibrate", str(tmp_path / "run"), str(tmp_path / "run2"), "--json"])
    assert cal.exit_code == 0, cal.output
    stored = json.loads((tmp_path / "home" / "plan" / "calibration.json").read_text())
    assert stored == json.loads(cal.output)
    from ayar.plan.catalogue import load_calibrations

    cpu = load_calibrations()["cpu"]
    assert cpu.source.startswith("ayar plan --calibrate") and cpu.mfu[0] < cpu.mfu[1]


def test_preflight_stops_before_loading_weights(sft_recipe, monkeypatch, tmp_path):
    import ayar.model.load
    import ayar.plan.measure
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))

    def no_weights(*args, **kwargs):
        raise RuntimeError("weights loaded")

    monkeypatch.setattr(ayar.model.load, "load_model", no_weights)
    monkeypatch.setattr(ayar.plan.measure, "available_memory", lambda device: 2**20)
    recipe = load_recipe(sft_recipe(), [])
    with pytest.raises(AyarError, match="--force") as info:
        train_from_recipe(recipe)
    assert "needs ~" in str(info.value) and "available" in str(info.value)
    with pytest.raises(RuntimeError, match="weights loaded"):  # --force goes on to load the model
        train_from_recipe(recipe, force=True)


def test_preflight_names_the_cheapest_change(sft_recipe, monkeypatch, tmp_path):
    import ayar.plan.measure
    from ayar.plan.catalogue import GIB
    from ayar.plan.estimate import estimate_device, plan_recipe
    from ayar.plan.report import preflight, this_device
    from ayar.recipe import load_recipe

    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    recipe = load_recipe(sft_recipe(train={"micro_batch_size": 1, "gradient_accumulation_steps": 2}), [])
    p = plan_recipe(recipe)
    plain = estimate_device(p, this_device()).peak
    ckpt = estimate_device(p, this_device(), checkpointing=True).peak
    monkeypatch.setattr(ayar.plan.measure, "available_memory", lambda device: int((plain + ckpt) / 2))
    import torch

    from ayar.model.load import load_tokenizer

    lines = []
    with pytest.raises(AyarError, match="--set train.gradient_checkpointing=true"):
        preflight(recipe, load_tokenizer(recipe.model.path), _examples(recipe), torch.device("cpu"), force=False,
                  say=lines.append)
    assert lines and "GiB" in lines[0] or "MiB" in lines[0]
    assert plain < 4 * GIB


def _examples(recipe):
    from ayar.model.load import load_tokenizer
    from ayar.train.methods import METHODS

    return METHODS[recipe.method].build_examples(recipe.data.train, load_tokenizer(recipe.model.path), recipe)[0]
