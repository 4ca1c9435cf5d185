"""Exact resume, crash safety, non-finite steps, early stopping, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ayar.chat.tokenize import encode_conversation
from ayar.errors import AyarError
from ayar.model.adapters import attach_adapter
from ayar.recipe import AdapterSection, TrainSection, load_recipe
from ayar.train import checkpoint as ckpt
from ayar.train.loop import Checkpointing, Diverged, StopRequest, fit
from ayar.train.run import train_from_recipe
from helpers import colour_conversations, write_jsonl

STEPS = 10


@pytest.fixture(scope="module")
def examples(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    return [encode_conversation(tok, r["messages"]) for r in colour_conversations(40, seed=3)]


def make_model(model_dir):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # dropout > 0 so that the dropout RNG state has to be restored for an exact resume
    return attach_adapter(model, AdapterSection(r=4, alpha=8, dropout=0.1))


def cfg(**kw) -> TrainSection:
    base = {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "max_steps": STEPS, "learning_rate": 5e-3,
            "precision": "fp32", "seed": 11, "log_every": 1, "eval_every": 4}
    return TrainSection(**{**base, **kw})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_resume_after_crash_equals_uninterrupted(tmp_path, tiny_llama, examples):
    reference_model = make_model(tiny_llama)
    reference = fit(reference_model, examples, cfg(), pad_id=0, val_examples=examples[:8])

    root = tmp_path / "checkpoints"
    policy = Checkpointing(root, every=3, keep_last=2, recipe_yaml="r")

    def crash(step, total, record):
        if step == 7:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(make_model(tiny_llama), examples, cfg(), pad_id=0, val_examples=examples[:8], checkpointing=policy,
            progress=crash)
    latest = ckpt.complete_checkpoints(root)[-1]
    assert latest.name == "step-00000006"

    # A crash in the middle of writing the next checkpoint leaves folders that must never be used.
    (root / ".tmp-step-00000009").mkdir()
    broken = root / "step-00000009"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes(b"truncated")
    assert ckpt.complete_checkpoints(root)[-1] == latest

    resumed_model = make_model(tiny_llama)
    policy.resume_from = latest
    resumed = fit(resumed_model, examples, cfg(), pad_id=0, val_examples=examples[:8], checkpointing=policy)
    assert resumed.resumed_from == 6 and resumed.steps == STEPS
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in reference.history], abs=1e-6)
    assert resumed.eval_loss == pytest.approx(reference.eval_loss, abs=1e-6)
    for name, value in weights(reference_model).items():
        torch.testing.assert_close(weights(resumed_model)[name], value, atol=1e-6, rtol=0)
    # pruning kept the last two plus the best by eval loss, and removed the broken folders
    names = sorted(p.name for p in root.iterdir())
    assert not any(n.startswith(".tmp") for n in names)
    assert all(ckpt.is_complete(root / n) for n in names)


def test_checkpoint_state_round_trips_without_pickle(tmp_path):
    state = {"a": torch.arange(3), "nested": [1, (2.5, None), {"k": torch.ones(2, 2)}], 3: "int key"}
    ckpt.save_state(tmp_path, "s", state)
    back = ckpt.load_state(tmp_path, "s")
    assert back[3] == "int key" and back["nested"][1] == (2.5, None)
    torch.testing.assert_close(back["nested"][2]["k"], torch.ones(2, 2))
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}


def test_non_finite_step_is_skipped_then_divergence_stops(tmp_path, tiny_llama, examples):
    model = make_model(tiny_llama)
    calls = {"n": 0, "bad": {3}}

    def poison(module, inputs, output):  # the final hidden states of chosen forward calls become NaN
        calls["n"] += 1
        step = (calls["n"] - 1) // 2 + 1  # two micro-batches per step
        return output * float("nan") if step in calls["bad"] else output

    # (the head itself is applied by ayar.train.losses.target_logps, not through lm_head's forward)
    model.get_base_model().model.norm.register_forward_hook(poison)
    warnings: list[str] = []
    result = fit(model, examples, cfg(max_steps=5, eval_every=None), pad_id=0, warn=warnings.append)
    assert result.skipped_steps == 1 and result.steps == 5
    assert [r.get("skipped", False) for r in result.history] == [False, False, True, False, False]
    assert "update skipped" in warnings[0]
    assert all(torch.isfinite(p).all() for p in weights(model).values())

    # Every step bad from step 3 on: stop after max_bad_steps, keeping the last good checkpoint.
    model = make_model(tiny_llama)
    calls.update(n=0, bad=set(range(3, 100)))
    # (the head itself is applied by ayar.train.losses.target_logps, not through lm_head's forward)
    model.get_base_model().model.norm.register_forward_hook(poison)
    root = tmp_path / "ck"
    with pytest.raises(Diverged, match="3 consecutive steps"):
        fit(model, examples, cfg(max_bad_steps=3, eval_every=None), pad_id=0,
            checkpointing=Checkpointing(root, every=2, keep_last=2, recipe_yaml="r"))
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step-00000002", "step-00000004"]
    good = load_file(str(root / "step-00000004" / "weights.safetensors"))
    assert all(torch.isfinite(v).all() for v in good.values())


def test_early_stopping(tiny_llama, examples):
    result = fit(make_model(tiny_llama), examples, cfg(eval_every=2, early_stopping_patience=2,
                                                       early_stopping_min_delta=100.0),
                 pad_id=0, val_examples=examples[:8])
    # evals at 2 (best), 4 and 6 (no improvement of > 100): stop at 6
    assert result.stop_reason == "early_stopping" and result.steps == 6 and result.best_step == 2


def test_stop_request_checkpoints_and_stops(tmp_path, tiny_llama, examples):
    stop = StopRequest()

    def press_ctrl_c(step, total, record):
        if step == 2:
            stop(signal.SIGINT, None)

    root = tmp_path / "ck"
    result = fit(make_model(tiny_llama), examples, cfg(eval_every=None), pad_id=0, progress=press_ctrl_c, stop=stop,
                 checkpointing=Checkpointing(root, every=None, keep_last=2, recipe_yaml="r"))
    assert result.stop_reason == "signal" and result.steps == 2
    assert [p.name for p in ckpt.complete_checkpoints(root)] == ["step-00000002"]


# ----------------------------------------------------------------------------- through the CLI, with real signals


def write_recipe(tmp_path, model_dir, name="recipe.yaml", **train):
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(64, seed=0))
    recipe = {"model": {"path": str(model_dir), "dtype": "fp32"},
              "data": {"train": "train.jsonl", "max_length": 64},
              "adapter": {"r": 4, "alpha": 8, "dropout": 0.1},
              "train": {"max_steps": 40, "micro_batch_size": 4, "learning_rate": 5e-3, "precision": "fp32",
                        "save_every": 1, "log_every": 1, "tracking": "none", **train},
              "output_dir": "run"}
    (tmp_path / name).write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return tmp_path / name


def wait_for_checkpoint(proc, root, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ckpt.complete_checkpoints(root) or proc.poll() is not None:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_llama, sig):
    reference_dir = tmp_path / "ref"
    reference_dir.mkdir()
    train_from_recipe(load_recipe(write_recipe(reference_dir, tiny_llama)))
    expected = load_file(str(reference_dir / "run/adapter/adapter_model.safetensors"))

    recipe = write_recipe(tmp_path, tiny_llama)
    proc = subprocess.Popen([sys.executable, "-m", "ayar.cli", "train", str(recipe)], stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_for_checkpoint(proc, tmp_path / "run/checkpoints")
    proc.send_signal(sig)  # SIGKILL may land mid-checkpoint-write; SIGTERM asks for a clean stop
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        assert "interrupted at step" in stderr and "Resume with" in stderr
    assert not (tmp_path / "run/summary.json").exists()

    # A changed recipe is refused, with the change listed.
    with pytest.raises(AyarError, match=r"train.learning_rate: 0.005 -> 0.01"):
        train_from_recipe(load_recipe(recipe, ["train.learning_rate=0.01"]))

    resumed = train_from_recipe(load_recipe(recipe), resume=True)
    assert resumed.result.resumed_from is not None and resumed.result.steps == 40
    got = load_file(str(tmp_path / "run/adapter/adapter_model.safetensors"))
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0)
    metrics = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in metrics] == list(range(1, 41))


def test_out_of_memory_is_one_clear_message(tmp_path, tiny_llama, monkeypatch):
    from ayar.train.losses import TargetLoss

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(TargetLoss, "forward", oom)
    with pytest.raises(AyarError) as info:
        train_from_recipe(load_recipe(write_recipe(tmp_path, tiny_llama)))
    message = str(info.value)
    assert "out of memory at step 1 with a micro-batch of shape (4, " in message
    assert "train.micro_batch_size=4" in message and "data.max_length=64" in message
    assert "train.micro_batch_size=2 with train.gradient_accumulation_steps=2" in message
    assert "gradient_checkpointing=true" in message and "QLoRA" in message
