"""Run folders to export: short training runs on tiny Llama and Qwen2 models, built once per session."""

from __future__ import annotations

import pytest
import yaml

from ayar.model.tiny import build_tiny_model
from helpers import colour_conversations, corpus, write_jsonl


def train_run(folder, model_dir, *, adapter: dict, steps: int, lr: float = 1e-2):
    """Train ``steps`` steps of SFT on the colour task and return the run folder."""
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", colour_conversations(64, seed=0))
    recipe = {
        "model": {"path": str(model_dir), "dtype": "fp32"},
        "data": {"train": "train.jsonl", "max_length": 96},
        "adapter": adapter,
        "train": {"learning_rate": lr, "max_steps": steps, "micro_batch_size": 8, "precision": "fp32",
                  "log_every": steps, "tracking": "none", "warmup_ratio": 0.0},
        "output_dir": "run",
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train_from_recipe(load_recipe(folder / "recipe.yaml"))
    return folder / "run"


def tiny(folder, arch):
    """A tiny model whose embeddings are large enough (init_std 0.1) for a LoRA-only run to learn the task."""
    return build_tiny_model(folder, corpus(), arch=arch, vocab_size=512, hidden_size=64, intermediate_size=128,
                            num_layers=2, num_heads=2, num_kv_heads=1, init_std=0.1)


@pytest.fixture(scope="session")
def export_bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_bases")
    return {arch: tiny(root / arch, arch) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="session")
def lora_runs(tmp_path_factory, export_bases):
    """A trained LoRA run per architecture: it answers the colour task and ends its turn."""
    root = tmp_path_factory.mktemp("lora_runs")
    return {arch: train_run(root / arch, base, adapter={"r": 8, "alpha": 16, "dropout": 0.0}, steps=40)
            for arch, base in export_bases.items()}


@pytest.fixture(scope="session")
def dora_run(tmp_path_factory, export_bases):
    return train_run(tmp_path_factory.mktemp("dora_run"), export_bases["llama"],
                     adapter={"type": "dora", "r": 8, "alpha": 16, "dropout": 0.0}, steps=4)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, export_bases):
    return train_run(tmp_path_factory.mktemp("full_run"), export_bases["qwen2"], adapter={"type": "full"}, steps=3,
                     lr=1e-3)


@pytest.fixture(scope="session")
def lora_exports(tmp_path_factory, lora_runs):
    """Every format of each LoRA run, verified: {arch: {format: ExportResult}}."""
    from ayar.export.run import export_run

    types = {"llama": ["f32", "f16", "bf16", "q8_0"], "qwen2": ["f32", "f16", "q8_0"]}
    exports = {}
    for arch, run in lora_runs.items():
        results = export_run(run, ["merged", "adapter", "gguf", "vllm"], tmp_path_factory.mktemp(f"export_{arch}"),
                             dtype="fp32", gguf_types=types[arch])
        exports[arch] = {r.format: r for r in results}
    return exports


@pytest.fixture(scope="session")
def colour_prompts():
    """Conversations of the task the runs were trained on (their replies are confident and end the turn)."""
    return [
        [{"role": "system", "content": "Ürünün rengini ve türünü JSON olarak ver."},
         {"role": "user", "content": f"Ürün: {colour} renkli güzel bir {item}"}]
        for colour, item in (("mavi", "masa"), ("kırmızı", "çanta"), ("sarı", "lamba"))
    ]
