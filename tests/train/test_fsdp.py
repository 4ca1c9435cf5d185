"""FSDP (``train.distributed: fsdp``) over two CPU processes (gloo) trains exactly as one process does.

Each sharded run is the real command line (``torchrun -m ayar.cli train``), each
single-process one the same training in this process, on a tiny random Llama: the
same global batch (one process with micro-batches of 8, or two with 4
each, accumulated over 2) must give the same loss and gradient norm at every step,
the same saved weights and the same checkpoint files; a sharded run stopped after
a checkpoint resumes to the same end. Tolerances are for fp32 sums taken in a
different order: 1e-5 absolute on losses and weights (seen: about 3e-7). LoRA
weights get 1e-4: at lr 5e-3 Adam divides each element's step by the root of its
own squared gradients, so an element whose gradient stays near zero turns rounding
noise into a visible step (seen: 2e-5 on one lora_B element of 0.018, while losses,
gradient norms and Adam's moments agreed to 3e-7).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from ayar.errors import AyarError, RecipeError
from ayar.recipe import load_recipe, validate_recipe
from ayar.train.run import train_from_recipe
from helpers import colour_conversations, write_jsonl

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def write_recipe(tmp_path: Path, model_dir, name: str, *, micro: int, distributed: str, adapter: str) -> Path:
    recipe = {"model": {"path": str(model_dir), "dtype": "fp32"},
              "data": {"train": "../train.jsonl", "val": "../val.jsonl", "max_length": 64},
              "adapter": {"type": adapter, "r": 4, "alpha": 8, "dropout": 0.0},
              "train": {"max_steps": 6, "micro_batch_size": micro, "gradient_accumulation_steps": 2,
                        "learning_rate": 1e-3 if adapter == "full" else 5e-3, "precision": "fp32",
                        "distributed": distributed, "save_every": 3, "eval_every": 3, "log_every": 1,
                        "tracking": "none"},
              "output_dir": "run"}
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return folder / "recipe.yaml"


def train(recipe: Path, processes: int) -> Path:
    """Train on one process (here, in-process) or launch ``ayar train`` on several; return the run folder."""
    if processes == 1:
        train_from_recipe(load_recipe(recipe))
    else:
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               str(processes), "-m", "ayar.cli", "train", str(recipe)],
                              capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return recipe.parent / "run"


def metrics(run: Path, key: str) -> list[float | None]:
    return [json.loads(line).get(key) for line in (run / "metrics.jsonl").read_text().splitlines()]


def write_data(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(48, seed=4))
    write_jsonl(tmp_path / "val.jsonl", colour_conversations(8, seed=5))


def assert_same_tensors(a: Path, b: Path, abs_tol: float) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name].shape == right[name].shape, name
        torch.testing.assert_close(right[name], left[name], rtol=0, atol=abs_tol, msg=name)


def assert_same_training(one: Path, two: Path, weights: str, weights_tol: float = 1e-5) -> None:
    losses = metrics(one, "loss")
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.2  # it learned
    assert metrics(two, "loss") == pytest.approx(losses, abs=1e-5)
    assert metrics(two, "grad_norm") == pytest.approx(metrics(one, "grad_norm"), rel=1e-5)
    evals = metrics(one, "eval_loss")
    assert [e is not None for e in evals] == [False, False, True, False, False, True]
    assert metrics(two, "eval_loss") == [pytest.approx(e, abs=1e-5) if e else None for e in evals]
    assert_same_tensors(one / weights, two / weights, weights_tol)
    # checkpoints hold whole tensors, in the single-process format: weights and AdamW's moments
    for name, tol in (("weights", weights_tol), ("optimizer", 1e-5)):
        assert_same_tensors(one / f"checkpoints/step-00000006/{name}.safetensors",
                            two / f"checkpoints/step-00000006/{name}.safetensors", tol)
    assert json.loads((two / "summary.json").read_text())["steps"] == 6  # written once, by rank 0


def one_process_and_fsdp(tmp_path, base, adapter):
    """The same 6 steps run twice: one process at micro-batch 8, then 2 FSDP ranks at micro-batch 4 each."""
    write_data(tmp_path)
    one = train(write_recipe(tmp_path, base, "one", micro=8, distributed="ddp", adapter=adapter), 1)
    two = train(write_recipe(tmp_path, base, "two", micro=4, distributed="fsdp", adapter=adapter), 2)
    return one, two


@pytest.mark.slow
def test_fsdp_full_finetuning_matches_one_process_and_resumes_exactly(tmp_path, tiny_llama):
    one, two = one_process_and_fsdp(tmp_path, tiny_llama, "full")
    assert_same_training(one, two, "model/model.safetensors")
    # tied input and output embeddings were saved once, as a single process saves them
    assert "lm_head.weight" not in load_file(str(two / "model/model.safetensors"))

    # Stop after step 3's checkpoint (by removing what came later) and resume: steps 4-6 again, sharded.
    finished = tmp_path / "finished"
    shutil.copytree(two, finished)
    shutil.rmtree(two / "checkpoints/step-00000006")
    shutil.rmtree(two / "model")
    (two / "summary.json").unlink()
    train(two.parent / "recipe.yaml", 2)
    assert json.loads((two / "summary.json").read_text())["resumed_from"] == 3
    assert metrics(two, "step") == [1, 2, 3, 4, 5, 6]
    assert metrics(two, "loss") == pytest.approx(metrics(finished, "loss"), abs=1e-6)
    assert_same_tensors(finished / "model/model.safetensors", two / "model/model.safetensors", 1e-6)


@pytest.mark.slow
def test_fsdp_lora_matches_one_process(tmp_path, tiny_llama):
    one, two = one_process_and_fsdp(tmp_path, tiny_llama, "lora")
    assert_same_training(one, two, "adapter/adapter_model.safetensors", weights_tol=1e-4)


def test_fsdp_refuses_what_it_cannot_shard_when_the_recipe_loads():
    raw = {"model": {"path": "m", "quantization": "nf4"}, "data": {"train": "t.jsonl"},
           "adapter": {"train_embeddings": "new"}, "train": {"distributed": "fsdp"}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, lines={("train", "distributed"): 7})
    assert info.value.problems == [
        "train.distributed fsdp cannot shard quantised (bitsandbytes) weights; use ddp for QLoRA, or "
        "model.quantization: none (line 7)",
        "train.distributed fsdp is not supported with adapter.train_embeddings; use ddp, or train_embeddings: none "
        "(line 7)",
    ]


def test_fsdp_refuses_a_launch_through_accelerates_own_fsdp_or_deepspeed(tiny_llama):
    from accelerate.utils import DistributedType
    from transformers import AutoModelForCausalLM

    from ayar.train.sharding import shard

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        with pytest.raises(AyarError, match=f"accelerate's {kind.value} integration.*Launch with torchrun"):
            shard(model, model, SimpleNamespace(distributed_type=kind))
