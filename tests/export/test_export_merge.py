"""Merged weights: parity with base + adapter (LoRA and DoRA), stopping, dtype and shards, refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from ayar.eval.generate import generate, load_for_inference
from ayar.export.run import export_run
from ayar.export.verify import VerificationError

IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 1, 2, 60, 61]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def base_and_adapter(run):
    base = AutoModelForCausalLM.from_pretrained(json.loads((run / "adapter/adapter_config.json").read_text())
                                                ["base_model_name_or_path"], dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(run / "adapter")).eval()


def assert_parity(merged_dir, run):
    """Merged logits equal base + adapter to 1e-4 (fp32); the adapter itself moves them by far more."""
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    adapted = base_and_adapter(run)
    expected = logits(adapted)
    assert (logits(merged) - expected).abs().max().item() < 1e-4
    with adapted.disable_adapter():
        assert (logits(adapted) - expected).abs().max().item() > 0.5  # the test could fail


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_merged_lora_reproduces_base_plus_adapter(arch, lora_exports, lora_runs):
    merged = lora_exports[arch]["merged"]
    assert_parity(merged.folder, lora_runs[arch])
    check = merged.manifest["verification"]["merge"]
    assert check["max_abs_logit_diff"] < 1e-4 and merged.manifest["dtype"] == "fp32"
    assert merged.manifest["verification"]["saved_model"]["weights_identical"] is True


def test_merged_dora_reproduces_base_plus_adapter(dora_run, tmp_path):
    assert json.loads((dora_run / "adapter/adapter_config.json").read_text())["use_dora"] is True
    (result,) = export_run(dora_run, ["merged"], tmp_path, dtype="fp32")
    assert_parity(result.folder, dora_run)


def test_merged_answers_like_base_plus_adapter_and_stops(lora_exports, lora_runs, colour_prompts):
    merged_dir = lora_exports["llama"]["merged"].folder
    adapted, tokenizer = load_for_inference(str(lora_runs["llama"]), dtype="fp32")
    merged, merged_tokenizer = load_for_inference(str(merged_dir), dtype="fp32")
    expected = generate(adapted, tokenizer, colour_prompts, max_new_tokens=40)
    assert generate(merged, merged_tokenizer, colour_prompts, max_new_tokens=40) == expected
    assert all(reply.startswith('{"renk": ') for reply in expected), expected

    # generation_config.json alone (no eos_token_id passed) stops at <|im_end|> well before the limit.
    assert json.loads((merged_dir / "generation_config.json").read_text())["eos_token_id"] == [1]
    im_end = merged_tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = merged_tokenizer.apply_chat_template(colour_prompts[0], tokenize=False, add_generation_prompt=True)
    ids = merged_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = merged.generate(ids, do_sample=False, max_new_tokens=40, temperature=None, top_p=None, top_k=None)[0]
    new = out[ids.shape[1]:].tolist()
    assert new[-1] == im_end and len(new) < 40


def test_bf16_sharded_merge_is_the_fp32_merge_cast(lora_exports, lora_runs, tmp_path):
    (result,) = export_run(lora_runs["qwen2"], ["merged"], tmp_path, dtype="bf16", max_shard_size="40KB")
    folder = result.folder
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and result.files == shards
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert result.manifest["dtype"] == "bf16" and result.manifest["details"]["merged_in"] == "fp32"
    fp32 = load_file(lora_exports["qwen2"]["merged"].folder / "model.safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(str(folder)).state_dict()
    assert loaded["model.embed_tokens.weight"].dtype == torch.bfloat16
    for name, tensor in fp32.items():
        assert torch.equal(loaded[name], tensor.to(torch.bfloat16)), name


def test_full_finetune_merged_is_a_cast_copy(full_run, tmp_path):
    (result,) = export_run(full_run, ["merged"], tmp_path, dtype="fp16")
    source = load_file(full_run / "model/model.safetensors")
    saved = load_file(result.folder / "model.safetensors")
    assert set(saved) == set(source)
    for name, tensor in source.items():
        assert saved[name].dtype == torch.float16 and torch.equal(saved[name], tensor.to(torch.float16)), name
    assert result.manifest["run"]["kind"] == "full" and "merge" not in result.manifest["verification"]


def test_a_wrong_merge_is_refused_and_nothing_is_published(lora_runs, tmp_path, monkeypatch):
    import ayar.export.merge as merge_module

    real_merge = merge_module.merge

    def corrupted(model):
        merged = real_merge(model)
        with torch.no_grad():
            merged.model.layers[1].mlp.down_proj.weight.add_(1e-2)
        return merged

    monkeypatch.setattr(merge_module, "merge", corrupted)
    run = lora_runs["llama"]
    log = run / "exports.jsonl"
    before = log.read_text() if log.exists() else ""
    with pytest.raises(VerificationError, match="do not reproduce base"):
        export_run(run, ["merged"], tmp_path / "out")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert (log.read_text() if log.exists() else "") == before


def test_auto_dtype_is_the_one_the_base_declares(lora_runs, export_bases, tmp_path):
    """The base is loaded in fp32 to merge; `auto` still saves in the dtype its config.json names (bf16 here)."""
    import yaml

    base = tmp_path / "base-bf16"
    shutil.copytree(export_bases["llama"], base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    run = tmp_path / "run"
    shutil.copytree(lora_runs["llama"], run, ignore=shutil.ignore_patterns("export*"))
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["model"]["path"] = str(base)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (result,) = export_run(run, ["merged"], tmp_path / "out")
    assert result.manifest["dtype"] == "bf16"
    assert json.loads((result.folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert load_file(result.folder / "model.safetensors")["model.norm.weight"].dtype == torch.bfloat16
