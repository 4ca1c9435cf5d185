"""GGUF export of the real base models (Gemma 3 270M, SmolLM2-135M) through llama.cpp's own converter.

A short LoRA run on each (a few steps: the export, not the training, is under test) is exported to
f16 and the K-quants; every file must pass verification, and the measured top-token agreement is
what the README's table reports. Skipped when the models cannot be fetched (`ayar model fetch`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ayar.export.run import export_run
from helpers import colour_conversations, write_jsonl

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
TYPES = ["q4_k_m", "f16", "q8_0"]


def short_run(folder, model_dir, chat_template):
    """Two SFT steps of a rank-8 LoRA on the colour task (fp32, short sequences)."""
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", colour_conversations(8, seed=0))
    recipe = {
        "model": {"path": str(model_dir), "dtype": "fp32", "chat_template": chat_template},
        "data": {"train": "train.jsonl", "max_length": 64},
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"learning_rate": 1e-3, "max_steps": 2, "micro_batch_size": 2, "precision": "fp32",
                  "log_every": 2, "tracking": "none", "warmup_ratio": 0.0},
        "output_dir": "run",
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train_from_recipe(load_recipe(folder / "recipe.yaml"))
    return folder / "run"


def check_export(run, out, architecture):
    (result,) = export_run(run, ["gguf"], out, gguf_types=TYPES)
    details, checks = result.manifest["details"], result.manifest["verification"]
    assert details["architecture"] == architecture
    assert details["written_by"].startswith("llama.cpp convert_hf_to_gguf.py") and details["notes"] == []
    assert checks["tokenizer"]["identical"] and checks["f16"]["top1_agreement"] >= 0.95
    for gguf_type in TYPES:
        assert (result.folder / f"run-{gguf_type}.gguf").is_file()
    print(architecture, {t: round(a, 3) for t, a in details["top1_agreement"].items()})
    return result


def test_smollm2_exports_through_the_converter(smollm2_path, tmp_path, monkeypatch):
    short_run(tmp_path / "smollm2", smollm2_path, None)
    monkeypatch.chdir(tmp_path)  # relative run and out folders, as `ayar demo --out demo_out` passes them
    result = check_export(Path("smollm2/run"), Path("out"), "llama")
    assert 'PARAMETER stop "<|im_end|>"' in (result.folder / "Modelfile").read_text()


def test_gemma3_exports_through_the_converter(gemma_path, tmp_path):
    run = short_run(tmp_path / "gemma", gemma_path, "gemma")
    result = check_export(run, tmp_path / "out", "gemma3_text")
    modelfile = (result.folder / "Modelfile").read_text()
    assert "<start_of_turn>" in modelfile and 'PARAMETER stop "<end_of_turn>"' in modelfile
