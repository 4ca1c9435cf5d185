"""End to end on the tiny model: SFT and pretrain through the CLI, reload, generate, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ayar.cli import app
from ayar.model.tiny import build_tiny_model
from helpers import colour_conversations, corpus, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_for_lora(tmp_path_factory):
    """A tiny model whose random embeddings are large enough for a LoRA-only run to fit (see build_tiny_model)."""
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", corpus(), vocab_size=512, hidden_size=64,
                            intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1, init_std=0.1)


def make_recipe(tmp_path, model_dir, tracking: str = "none", **train) -> str:
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(200, seed=0))
    write_jsonl(tmp_path / "val.jsonl", colour_conversations(20, seed=9))
    recipe = {
        "model": {"path": str(model_dir), "dtype": "fp32"},
        "data": {"train": "train.jsonl", "val": "val.jsonl", "max_length": 128},
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"learning_rate": 1e-2, "max_steps": 60, "micro_batch_size": 8, "precision": "fp32",
                  "log_every": 1, "tracking": tracking, **train},
        "output_dir": "run",
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return str(path)


@pytest.mark.slow
def test_sft_through_cli_loss_falls_and_model_answers(tmp_path, tiny_for_lora):
    recipe = make_recipe(tmp_path, tiny_for_lora, tracking="mlflow")
    result = runner.invoke(app, ["train", recipe])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics]
    # ln(vocab=384) = 5.95 at the start; recorded on this tiny model: ~1.5 after 60 steps at lr 1e-2 (fp32).
    assert losses[0] > 4.5
    assert 1.0 < losses[-1] < 2.3, losses
    assert 1.0 < metrics[-1]["eval_loss"] < 2.4
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["steps"] == 60 and summary["data"]["examples"] == 200
    assert (tmp_path / "run/adapter/adapter_model.safetensors").is_file()
    assert yaml.safe_load((tmp_path / "run/recipe.yaml").read_text())["train"]["learning_rate"] == 1e-2

    # The run manifest hashes the inputs and outputs; MLflow holds the same metric curve.
    import hashlib

    from mlflow.tracking import MlflowClient

    manifest = json.loads((tmp_path / "run/run_manifest.json").read_text())
    train_file = str((tmp_path / "train.jsonl").resolve())
    assert manifest["inputs"]["data_files"][train_file]["sha256"] == hashlib.sha256(
        (tmp_path / "train.jsonl").read_bytes()).hexdigest()
    adapter = manifest["outputs"]["adapter/adapter_model.safetensors"]["sha256"]
    assert adapter == hashlib.sha256((tmp_path / "run/adapter/adapter_model.safetensors").read_bytes()).hexdigest()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run/mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ayar").experiment_id])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == pytest.approx(losses)
    assert run.data.params["train.learning_rate"] == "0.01"

    # A finished run is not overwritten by accident.
    again = subprocess.run([sys.executable, "-m", "ayar.cli", "train", recipe], capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr

    out = runner.invoke(app, ["generate", str(tmp_path / "run"), "--prompt", "Ürün: mavi renkli güzel bir masa",
                              "--system", "Ürünün rengini ve türünü JSON olarak ver.", "--max-new-tokens", "40"])
    assert out.exit_code == 0, out.output
    assert "<|im_end|>" not in out.output and out.output.strip()


def test_saved_adapter_reloads_with_identical_logits(tmp_path, tiny_for_lora):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    trained = train_from_recipe(load_recipe(make_recipe(tmp_path, tiny_for_lora), ["train.max_steps=5"]))
    base = AutoModelForCausalLM.from_pretrained(tiny_for_lora, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "run/adapter")).eval()
    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 1]])
    trained.model.eval()
    with torch.no_grad():
        expected = trained.model(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    with reloaded.disable_adapter(), torch.no_grad():
        assert not torch.allclose(reloaded(input_ids=ids).logits, expected)  # the adapter matters


def test_pretrain_on_raw_text_end_to_end(tmp_path, tiny_llama):
    text = "\n\n".join(corpus() * 3)
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    recipe = {
        "model": {"path": str(tiny_llama)},
        "data": {"train": "corpus.txt", "max_length": 64},
        "method": "pretrain",
        "adapter": {"type": "full"},
        "train": {"learning_rate": 3e-3, "max_steps": 30, "micro_batch_size": 8, "precision": "fp32",
                  "log_every": 5, "tracking": "none"},
        "output_dir": "run",
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = runner.invoke(app, ["train", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert losses[0] > 5.0 and losses[-1] < 0.6 * losses[0], losses
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["adapter"] == "full" and summary["data"]["examples"] > 10
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "run/model")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert tuned.config.vocab_size == base.config.vocab_size
    assert not torch.equal(tuned.model.embed_tokens.weight, base.model.embed_tokens.weight)


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ayar.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "lines, expected",
    [
        (None, "train.jsonl: file not found"),
        (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
          '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
          '{"messages": [oops'], "train.jsonl:3: not valid JSON"),
        (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
          '{"messages": [{"role": "user", "content": "only a question"}]}'],
         "train.jsonl:2: conversation has no assistant turn"),
    ],
    ids=["missing-file", "not-json", "no-assistant"],
)
@pytest.mark.slow
def test_bad_input_is_one_clear_line(tmp_path, tiny_llama, lines, expected):
    if lines is not None:
        (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = {"model": {"path": str(tiny_llama)}, "data": {"train": "train.jsonl"}, "output_dir": "run"}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = run_cli("train", str(tmp_path / "recipe.yaml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0], result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_bad_recipe_reports_all_problems(tmp_path):
    (tmp_path / "r.yaml").write_text("model:\n  path: x\ndata:\n  train: t.jsonl\nadapter:\n  r: 0\ntrain:\n  lr: 1\n")
    result = run_cli("check", str(tmp_path / "r.yaml"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "adapter.r: must be > 0, got 0 (line 6)" in result.stderr
    assert "train.lr: unknown key" in result.stderr


def test_generation_stops_at_the_end_of_turn_token(tiny_llama):
    """generate() hands the end-of-turn id to transformers as the stop token, and decodes only new tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ayar.eval.generate import generate

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    seen = {}
    real_generate = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real_generate(**kwargs)

    model.generate = spy
    replies = generate(model, tokenizer, [[{"role": "user", "content": "Merhaba"}]] * 3, max_new_tokens=5)
    assert seen["eos_token_id"] == [end] and seen["do_sample"] is False
    assert tokenizer.padding_side == "right"  # restored after left-padded generation
    assert len(replies) == 3 and len(set(replies)) == 1  # greedy and batched: identical prompts, identical replies
