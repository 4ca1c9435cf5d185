"""adapter.train_embeddings on an extended model: only the new rows train, and the run generates and exports."""

from __future__ import annotations

import json
from importlib import resources

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from ayar.errors import AyarError
from ayar.tokenizer.extend import extend, new_token_ids
from helpers import corpus, write_jsonl


def passages() -> list[str]:
    text = resources.files("ayar.eval").joinpath("data/general_tr.txt").read_text(encoding="utf-8")
    return [p for p in text.splitlines() if p.strip()]


def train_run(folder, model_dir, train_embeddings: str, steps: int = 12):
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", [{"text": p} for p in passages() * 4])
    recipe = {
        "method": "pretrain",
        "model": {"path": str(model_dir), "dtype": "fp32"},
        "data": {"train": "train.jsonl", "max_length": 64},
        "adapter": {"r": 4, "alpha": 8, "dropout": 0.0, "train_embeddings": train_embeddings},
        "train": {"learning_rate": 1e-2, "max_steps": steps, "micro_batch_size": 4, "precision": "fp32",
                  "log_every": steps, "tracking": "none", "warmup_ratio": 0.0},
        "output_dir": "run",
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train_from_recipe(load_recipe(folder / "recipe.yaml"))
    return folder / "run"


@pytest.fixture(scope="module")
def extended_base(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("adapt")
    base = build_tiny_model(root / "base", corpus(), vocab_size=512, hidden_size=64, intermediate_size=128,
                            num_layers=2, num_heads=2, num_kv_heads=1, init_std=0.1)
    (root / "corpus.txt").write_text("\n".join(passages()), encoding="utf-8")
    extend(str(base), root / "corpus.txt", 100, root / "ext")
    return base, root / "ext"


@pytest.fixture(scope="module")
def new_rows_run(extended_base, tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("run_new"), extended_base[1], "new")


@pytest.mark.slow
def test_only_new_rows_train_and_the_merged_export_verifies(extended_base, new_rows_run, tmp_path):
    from ayar.export.run import export_run

    base_dir, ext_dir = extended_base
    saved = load_file(new_rows_run / "adapter" / "adapter_model.safetensors")
    assert any("trainable_tokens_delta" in k for k in saved)
    config = json.loads((new_rows_run / "adapter" / "adapter_config.json").read_text())
    assert config["trainable_token_indices"]["embed_tokens"] == new_token_ids(ext_dir)

    (merged,) = export_run(new_rows_run, ["merged"], tmp_path, dtype="fp32")  # raises if verification fails
    assert merged.manifest["verification"]["merge"]["max_abs_logit_diff"] < 1e-4
    before = AutoModelForCausalLM.from_pretrained(ext_dir, dtype=torch.float32).get_input_embeddings().weight
    after = AutoModelForCausalLM.from_pretrained(merged.folder, dtype=torch.float32).get_input_embeddings().weight
    new = new_token_ids(ext_dir)
    old = [i for i in range(before.shape[0]) if i not in set(new)]
    torch.testing.assert_close(after[old], before[old], rtol=0, atol=0)  # old rows untouched
    assert (after[new] - before[new]).abs().max() > 1e-3  # new rows trained
    assert AutoTokenizer.from_pretrained(merged.folder).get_vocab() == AutoTokenizer.from_pretrained(ext_dir).get_vocab()


@pytest.mark.slow
def test_extended_run_generates(new_rows_run):
    from ayar.eval.generate import generate, load_for_inference

    model, tokenizer = load_for_inference(str(new_rows_run), dtype="fp32")
    (reply,) = generate(model, tokenizer, [[{"role": "user", "content": "Çay nasıl demlenir?"}]], max_new_tokens=8)
    assert isinstance(reply, str)


def test_inference_merges_the_trained_rows_with_the_same_logits(new_rows_run):
    """load_for_inference writes the trained rows into the weight once (unmerged, peft copies the whole
    embedding at every forward); the logits equal peft's unmerged model, and with the adapter disabled
    the base's."""
    from peft import PeftModel
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from ayar.model.run_folder import load_base, load_for_inference, model_spec

    model, tokenizer = load_for_inference(str(new_rows_run), dtype="fp32")
    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    assert layers and all(m.merged for m in layers)
    spec = model_spec(str(new_rows_run))
    unmerged = PeftModel.from_pretrained(load_base(spec, dtype="fp32"), str(spec.adapter)).eval()
    assert not any(m.merged for m in unmerged.modules() if isinstance(m, TrainableTokensLayer))
    ids = tokenizer(passages()[0], return_tensors="pt").input_ids
    assert any(i >= 512 for i in ids[0].tolist())  # the text uses new tokens
    with torch.no_grad():
        logits = model(ids).logits
        torch.testing.assert_close(logits, unmerged(ids).logits, rtol=0, atol=0)
        with model.disable_adapter():
            disabled = model(ids).logits
        torch.testing.assert_close(disabled, load_base(spec, dtype="fp32")(ids).logits, rtol=0, atol=0)
        assert not torch.equal(disabled, logits)


def test_new_rows_need_an_extended_model(extended_base):
    from ayar.model.adapters import attach_adapter
    from ayar.model.load import load_model
    from ayar.recipe import AdapterSection

    base_dir, ext_dir = extended_base
    with pytest.raises(AyarError, match="not a model extended"):
        attach_adapter(load_model(str(base_dir)), AdapterSection(train_embeddings="new"))
    model = attach_adapter(load_model(str(base_dir)), AdapterSection(train_embeddings="all"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert trainable  # every row, through the same mechanism


def test_full_fine_tuning_refuses_train_embeddings():
    from pydantic import ValidationError

    from ayar.recipe import AdapterSection

    with pytest.raises(ValidationError, match="full fine-tuning trains every embedding"):
        AdapterSection(type="full", train_embeddings="new")


@pytest.mark.slow
def test_gguf_export_of_an_extended_model_verifies(new_rows_run, tmp_path):
    """llama.cpp tokenises with the appended merges as HF does, and generates like the merged model."""
    pytest.importorskip("llama_cpp")
    from ayar.export.run import export_run

    (gguf,) = export_run(new_rows_run, ["gguf"], tmp_path, gguf_types=["f32"])  # raises if verification fails
    assert gguf.manifest["verification"]


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("rows_path", [True, False])  # False: the general path (train_embeddings: all uses it)
def test_training_loss_and_gradients_equal_hf_through_peft(extended_base, tmp_path, monkeypatch, tied, rows_path):
    """The head's trainable-rows path (only the new rows' gradient, no second pass over the logits) gives
    HF's loss and the same gradient for every trainable parameter, on a tied and an untied model."""
    from ayar.model.adapters import attach_adapter
    from ayar.recipe import AdapterSection
    from ayar.train import losses

    folder = extended_base[1]
    if not tied:
        untied = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, tie_word_embeddings=False)
        untied.lm_head.weight.data = untied.lm_head.weight.detach().clone() + 0.01
        untied.save_pretrained(tmp_path / "untied")
        AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path / "untied")
        for name in ("ayar_extension.json",):
            (tmp_path / "untied" / name).write_bytes((folder / name).read_bytes())
        folder = tmp_path / "untied"
    if not rows_path:
        monkeypatch.setattr(losses, "ROWS_GRAD_ELEMENTS", 0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = attach_adapter(model, AdapterSection(r=4, alpha=8, dropout=0.0, train_embeddings="new"))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)  # LoRA B and the deltas away from their initial values
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = torch.tensor([tokenizer(" ".join(passages()[:3]))["input_ids"][:96]])
    new = set(new_token_ids(extended_base[1]))
    assert len(new & set(ids[0].tolist())) >= 3  # the text uses new tokens, in the input and as targets
    labels = ids.clone()
    labels[0, :20] = -100

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    want, want_grads = loss_and_grads(lambda: model(input_ids=ids, labels=labels).loss)
    got, got_grads = loss_and_grads(lambda: (lambda s, n: s / n)(*losses.TargetLoss(model)(ids, labels)))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert want_grads.keys() == got_grads.keys() and any("trainable_tokens_delta" in n for n in got_grads)
    for name, grad in want_grads.items():
        # fp32 sums in another order: agreement to 1e-5 of the largest element (seen: 2e-6)
        torch.testing.assert_close(got_grads[name], grad, rtol=0, atol=1e-5 * float(grad.abs().max()), msg=name)


@pytest.mark.parametrize("template, expected", [("chatml", ["<|im_end|>", "<|im_start|>"]),
                                                ("gemma", ["<end_of_turn>", "<start_of_turn>"])])
def test_format_rows_are_the_chat_formats_special_tokens(tmp_path, template, expected):
    """train_embeddings: format makes trainable the rows of the special tokens the template writes (not BOS),
    and nothing else of the embedding; without a tokenizer or a chat template it is a clear error."""
    from ayar.chat.templates import format_token_ids
    from ayar.model.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "m", passages(), template=template, vocab_size=512, hidden_size=64,
                              intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = format_token_ids(tokenizer)
    assert sorted(tokenizer.convert_ids_to_tokens(ids)) == sorted(expected)
    assert tokenizer.bos_token_id not in ids

    from ayar.model.adapters import attach_adapter
    from ayar.recipe import AdapterSection

    with pytest.raises(AyarError, match="needs the tokenizer"):
        attach_adapter(AutoModelForCausalLM.from_pretrained(folder), AdapterSection(train_embeddings="format"))
    model = attach_adapter(AutoModelForCausalLM.from_pretrained(folder), AdapterSection(train_embeddings="format"),
                           tokenizer)
    deltas = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens_delta" in n]
    assert [tuple(d.shape) for d in deltas] == [(len(ids), 64)]  # tied: one set of rows
    tokenizer.chat_template = None
    with pytest.raises(AyarError, match="needs a chat template"):
        format_token_ids(tokenizer)
