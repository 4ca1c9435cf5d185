"""Parameter counts from config.json and safetensors headers equal the loaded model's and peft's."""

from __future__ import annotations

import json
import pathlib
import shutil
import struct

import pytest
from safetensors import SafetensorError

from ayar.errors import AyarError
from ayar.model.adapters import attach_adapter, count_parameters
from ayar.model.load import load_model
from ayar.plan.inventory import read_inventory, tensors_from_config, trainable_parameters
from ayar.recipe import AdapterSection

ADAPTERS = [AdapterSection(r=8), AdapterSection(type="dora", r=4), AdapterSection(r=16, target_modules=["q_proj", "v_proj"]),
            AdapterSection(type="full")]


@pytest.fixture(params=["tiny_llama", "tiny_qwen2", "tiny_gemma3"])
def model_dir(request):
    return request.getfixturevalue(request.param)


def _loaded(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path) if "gemma3" in str(path) else load_model(str(path))


def test_total_equals_loaded_model(model_dir):
    inv = read_inventory(str(model_dir))
    model = _loaded(model_dir)
    assert inv.total == sum(p.numel() for p in model.parameters())
    assert inv.dims.layers == 2 and inv.dims.hidden == 64


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: f"{a.type}-{a.target_modules}")
def test_trainable_equals_peft(model_dir, adapter):
    inv = read_inventory(str(model_dir))
    trainable, total = count_parameters(attach_adapter(_loaded(model_dir), adapter))
    assert trainable_parameters(inv, adapter) == trainable


def test_config_alone_gives_the_same_tensors(model_dir):
    inv = read_inventory(str(model_dir))
    config = json.loads((model_dir / "config.json").read_text())
    derived = tensors_from_config(inv.dims, config)
    assert sorted((t.name, t.shape) for t in derived) == sorted((t.name, t.shape) for t in inv.tensors)


def _header_length(path) -> int:
    with open(path, "rb") as fh:
        return struct.unpack("<Q", fh.read(8))[0]


def test_plan_reads_only_the_header_bytes(tiny_llama, tmp_path, monkeypatch):
    """Every byte read from a .safetensors file is counted: exactly 8 + header length, no weight data."""
    weights = tiny_llama / "model.safetensors"
    read_bytes: list[int] = []
    real_open = pathlib.Path.open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            read_bytes.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def spy(self, *args, **kwargs):
        fh = real_open(self, *args, **kwargs)
        return Counting(fh) if self.suffix == ".safetensors" else fh

    monkeypatch.setattr(pathlib.Path, "open", spy)
    inv = read_inventory(str(tiny_llama))
    assert inv.total > 0
    assert sum(read_bytes) == 8 + _header_length(weights) < weights.stat().st_size


def test_plan_works_without_the_weight_data(tiny_llama, tmp_path):
    """A weight file cut right after its header still plans (and the weights could never be loaded from it)."""
    from ayar.plan.estimate import plan_recipe
    from ayar.recipe import load_recipe
    from helpers import colour_conversations, write_jsonl

    folder = tmp_path / "headers-only"
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(8 + _header_length(weights))
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(8))
    (tmp_path / "r.yaml").write_text(f"model: {{path: {folder}}}\ndata: {{train: train.jsonl}}\n")
    p = plan_recipe(load_recipe(tmp_path / "r.yaml", []))
    assert p.inventory.total == read_inventory(str(tiny_llama)).total
    assert p.profile.examples == 8
    with pytest.raises((AyarError, SafetensorError)):  # the weights themselves are gone
        load_model(str(folder))


@pytest.mark.real_model
@pytest.mark.slow
def test_real_models_counts_equal_loaded_and_peft(real_model_path):
    """SmolLM2-135M and Gemma 3 270M: the header counts equal the loaded model's and peft's."""
    inv = read_inventory(str(real_model_path))
    model = load_model(str(real_model_path))
    assert inv.total == sum(p.numel() for p in model.parameters())
    for adapter in (AdapterSection(r=16), AdapterSection(type="dora", r=8)):
        trainable, _ = count_parameters(attach_adapter(load_model(str(real_model_path)), adapter))
        assert trainable_parameters(inv, adapter) == trainable
