"""Every stage on the two real base models (Gemma 3 270M, SmolLM2-135M), fetched once per machine.

Gemma is a base model without a chat template (ayar's bundled `gemma` template renders it), with a 262k
SentencePiece vocabulary, tied embeddings scaled by sqrt(hidden) and sliding-window layers; SmolLM2 is a
Llama with its own ChatML template.
"""

from __future__ import annotations

import json

import pytest
import torch

from ayar.chat.templates import end_of_turn_ids
from ayar.chat.tokenize import IGNORE_INDEX, encode_conversation
from ayar.model.load import load_tokenizer
from helpers import colour_conversations

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

CONVERSATION = [
    {"role": "system", "content": "Kibar bir müşteri temsilcisisin."},
    {"role": "user", "content": "İstanbul'daki şubeniz Iğdır'a kargo gönderiyor mu? ÇOK ACİL!"},
    {"role": "assistant", "content": "Evet, gönderiyoruz. Siparişiniz iki gün içinde ulaşır."},
    {"role": "user", "content": "Teşekkürler, ışıklı şişe de var mı?"},
    {"role": "assistant", "content": " Var; stokta 3 adet kaldı.\n\nBaşka bir sorunuz var mı? "},
]


def test_templates_and_loss_masks_equal_apply_chat_template(real_model_path):
    tokenizer = load_tokenizer(str(real_model_path))
    reference = tokenizer.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]
    example = encode_conversation(tokenizer, CONVERSATION, loss_on="assistant")
    assert example.input_ids == reference
    eot = tokenizer.convert_ids_to_tokens(end_of_turn_ids(tokenizer)[0])
    runs, current = [], None
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label == IGNORE_INDEX:
            current = None
            continue
        assert label == token
        if current is None:
            current = []
            runs.append(current)
        current.append(token)
    expected = [m["content"] + eot for m in CONVERSATION if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in runs] == expected


def test_lora_steps_lower_the_loss_and_the_model_stops_at_end_of_turn(real_lora_run, real_model_path):
    from ayar.eval.generate import generate, load_for_inference

    run, history = real_lora_run
    losses = [row["loss"] for row in history if "loss" in row]
    assert losses[-1] < 0.25 * losses[0], losses  # the colour task is learnt, not just nudged
    model, tokenizer = load_for_inference(str(run))
    held_out = colour_conversations(6, seed=7)
    replies = generate(model, tokenizer, [r["messages"][:2] for r in held_out], max_new_tokens=40)
    expected = [r["messages"][2]["content"] for r in held_out]
    assert sum(a == b for a, b in zip(replies, expected, strict=True)) >= 5, replies
    # stopping: greedy generation ended with the end-of-turn token, long before max_new_tokens
    prompt = tokenizer.apply_chat_template(held_out[0]["messages"][:2], add_generation_prompt=True, tokenize=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=40, do_sample=False, eos_token_id=end_of_turn_ids(tokenizer))
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert new[-1] in end_of_turn_ids(tokenizer) and len(new) < 40


def test_merged_export_equals_base_plus_adapter(real_lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from ayar.eval.generate import load_for_inference
    from ayar.export.run import export_run

    run, _ = real_lora_run
    # merged in fp32 and kept in fp32: equal to base + adapter up to float rounding. (Saved in the base's
    # bf16, the merged weights are rounded to 8 bits of mantissa: about 1% of the logit range.)
    (result,) = export_run(run, ["merged"], tmp_path / "exports", dtype="fp32", verify=True)
    merged = AutoModelForCausalLM.from_pretrained(result.folder, dtype=torch.float32).eval()
    model, tokenizer = load_for_inference(str(run), dtype="fp32")
    ids = tokenizer.apply_chat_template(colour_conversations(2, seed=3)[0]["messages"], tokenize=True,
                                        return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, merged(input_ids=ids).logits
        model.disable_adapter_layers()
        off = model(input_ids=ids).logits
    span = a.max() - a.min()
    assert (a - b).abs().max() <= 1e-4 * span
    assert (a - off).abs().max() > 1e-2 * span  # the adapter matters, so the parity above can fail
    assert json.loads((result.folder / "export_manifest.json").read_text())["verification"]


@pytest.mark.parametrize("adapter", [
    {"type": "dora", "r": 8, "alpha": 16},
    {"type": "lora", "r": 8, "alpha": 16, "quantization": "nf4"},
], ids=["dora", "qlora-nf4"])
def test_dora_and_qlora_attach_and_lower_the_loss_on_a_fixed_batch(real_model_path, tmp_path, adapter):
    import yaml

    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe
    from helpers import write_jsonl

    adapter = dict(adapter)
    quantization = adapter.pop("quantization", "none")
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(8, seed=5))
    recipe = {
        "model": {"path": str(real_model_path), "quantization": quantization},
        "data": {"train": "train.jsonl", "max_length": 96},
        "adapter": {**adapter, "dropout": 0.0, "target_modules": "all-linear"},
        # one micro-batch of 8 = the whole file: every step sees the same batch
        "train": {"learning_rate": 2e-3, "max_steps": 4, "micro_batch_size": 8, "log_every": 1,
                  "tracking": "none", "warmup_ratio": 0.0, "seed": 0},
        "output_dir": "run",
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    history = train_from_recipe(load_recipe(tmp_path / "recipe.yaml")).result.history
    losses = [row["loss"] for row in history if "loss" in row]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
