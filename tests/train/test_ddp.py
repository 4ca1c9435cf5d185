"""Two CPU processes (DDP over gloo) give the same loss curve as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from helpers import colour_conversations, write_jsonl


def recipe(tmp_path, model_dir, name: str, micro: int) -> str:
    recipe = {"model": {"path": str(model_dir), "dtype": "fp32"},
              "data": {"train": "../train.jsonl", "max_length": 64},
              "adapter": {"r": 4, "alpha": 8, "dropout": 0.0},
              "train": {"max_steps": 6, "micro_batch_size": micro, "gradient_accumulation_steps": 2,
                        "learning_rate": 5e-3, "precision": "fp32", "log_every": 1, "tracking": "none"},
              "output_dir": "run"}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return str(folder / "recipe.yaml")


def losses(path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path, tiny_llama):
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(48, seed=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    single = subprocess.run([sys.executable, "-m", "ayar.cli", "train", recipe(tmp_path, tiny_llama, "one", 8)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29533", "-m", "ayar.cli", "train", recipe(tmp_path, tiny_llama, "two", 4)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = losses(tmp_path / "one/run/metrics.jsonl"), losses(tmp_path / "two/run/metrics.jsonl")
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, abs=1e-5)
    assert one[-1] < one[0]
    # only rank 0 wrote: one metrics line per step, one summary
    assert json.loads((tmp_path / "two/run/summary.json").read_text())["steps"] == 6
