"""Preference training on a tiny model: log-prob parity with TRL, precomputed reference, KTO pairing,
learning on the demo's formal/informal pairs, bad pairs, and chaining from an SFT run."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_preference_losses import _trl_self

from ayar.demo.support import support_splits
from ayar.errors import AyarError, RecipeError
from ayar.recipe import validate_recipe
from ayar.train.objectives import PairObjective, Reference, make_objective, sequence_logps
from ayar.train.preference_data import read_kto, read_pairs
from ayar.train.preference_losses import PAIR_LOSSES
from helpers import corpus, write_jsonl

SPLITS = support_splits(240, 48, seed=3)


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    """A tiny Llama whose tokenizer knows the support replies, and the pair files."""
    from ayar.model.load import load_tokenizer
    from ayar.model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("support")
    texts = corpus() + [f"{p['prompt']} {p['chosen']} {p['rejected']}" for p in SPLITS["train"]]
    model = build_tiny_model(root / "model", texts, vocab_size=512, hidden_size=64, intermediate_size=128,
                             num_layers=2, num_heads=2, num_kv_heads=1)
    write_jsonl(root / "train.jsonl", SPLITS["train"])
    write_jsonl(root / "val.jsonl", SPLITS["test"])
    return root, model, load_tokenizer(str(model))


def _recipe(root, base, method: str, **sections):
    raw = {"model": {"path": str(base), "dtype": "fp32"},
           "data": {"train": str(root / "train.jsonl"), "val": str(root / "val.jsonl"), "max_length": 128},
           "method": method, "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"learning_rate": 5e-3, "max_steps": 50, "micro_batch_size": 8, "eval_every": 50,
                     "precision": "fp32", "tracking": "none", "log_every": 10, "seed": 0},
           "output_dir": str(root / f"run-{method}-{len(sections)}")}
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value) if isinstance(value, dict) else raw.__setitem__(key, value)
    return validate_recipe(raw)


def _lora_model(model_path, seed=0, perturb=True):
    """The tiny model with a LoRA adapter whose B matrices are non-zero (so policy != reference)."""
    from ayar.model.adapters import attach_adapter
    from ayar.model.load import load_model
    from ayar.recipe import AdapterSection

    torch.manual_seed(seed)
    model = attach_adapter(load_model(str(model_path), dtype=torch.float32, device=torch.device("cpu")),
                           AdapterSection(r=8, alpha=16, dropout=0.0))
    if perturb:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return model


def test_sequence_logps_equal_trl_on_the_tiny_model(support):
    from trl.experimental.cpo import CPOTrainer

    root, model_path, tokenizer = support
    pairs, _ = read_pairs(str(root / "train.jsonl"), tokenizer, 128)
    batch = PairObjective(PAIR_LOSSES["cpo"]["sigmoid"], {}).collate(pairs[:6], tokenizer.pad_token_id)
    model = _lora_model(model_path)
    with torch.no_grad():
        sums, counts = sequence_logps(model, batch["input_ids"], batch["labels"], batch["attention_mask"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = CPOTrainer.get_batch_logps(logits, batch["labels"])
    torch.testing.assert_close(sums, expected, atol=1e-5, rtol=1e-6)  # sums of ~100 fp32 terms
    assert counts.tolist() == batch["labels"][:, 1:].ne(-100).sum(1).tolist()


@pytest.mark.parametrize("nll_weight", [0.0, 0.5])
def test_dpo_loss_equals_trl_dpo_trainer_on_the_same_batch(support, tmp_path, nll_weight):
    """TRL's DPOTrainer tokenises the pairs itself; its batch then goes through ayar's objective.

    ``dpo.nll_weight`` (RPO) is TRL's ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, w]``.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    root, model_path, tokenizer = support
    policy = _lora_model(model_path).merge_and_unload()
    reference = _lora_model(model_path, perturb=False).merge_and_unload()
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in SPLITS["train"][:8]]
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to=[], use_cpu=True,
                     bf16=False, beta=0.2, max_length=128,
                     **({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, nll_weight]} if nll_weight else {}))
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        trl_loss = float(trainer.compute_loss(trainer.model, batch))
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    objective = PairObjective(PAIR_LOSSES["dpo"]["sigmoid"], {"beta": 0.2}, nll_weight,
                              reference=Reference("copy", reference))
    batch8 = {"input_ids": batch["input_ids"], "labels": labels, "attention_mask": batch["attention_mask"],
              "weight": torch.ones(8)}
    terms, _ = objective.wrap(policy)(**batch8)
    ours = float(terms["pairs"]) / 8
    if nll_weight:  # the loop divides each term by its count: pairs, and chosen tokens for the NLL term
        ours += float(terms["chosen_tokens"]) / objective.counts(batch8)["chosen_tokens"]
    assert abs(ours - trl_loss) < 1e-5, (ours, trl_loss)
    assert abs(ours - math.log(2)) > 1e-3  # policy and reference differ: the comparison is not trivial


def test_precomputed_reference_equals_on_the_fly(support):
    from ayar.train.objectives import precompute_reference

    root, model_path, tokenizer = support
    pairs, _ = read_pairs(str(root / "train.jsonl"), tokenizer, 128)
    pairs = pairs[:8]
    spec = PAIR_LOSSES["dpo"]["sigmoid"]
    results = []
    for mode in ("on_the_fly", "precompute"):
        model = _lora_model(model_path)
        examples = copy.deepcopy(pairs)
        reference = Reference("adapter_disabled")
        if mode == "precompute":
            _, hit = precompute_reference(PairObjective(spec, {}, reference=reference), model, [examples],
                                          pad_id=tokenizer.pad_token_id, batch_size=3, amp=None,
                                          device=torch.device("cpu"), key_parts={}, folder=None, use_cache=False)
            assert not hit and examples[0].ref is not None
            reference = None
        objective = PairObjective(spec, {"beta": 0.1}, reference=reference)
        batch = objective.collate(examples, tokenizer.pad_token_id)
        assert ("ref" in batch) == (mode == "precompute")
        terms, _ = objective.wrap(model)(**batch)
        terms["pairs"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(terms["pairs"]), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert abs(loss_a - loss_b) < 1e-6 and abs(loss_a / 8 - math.log(2)) > 1e-3
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)


@pytest.mark.slow
def test_precomputed_run_equals_on_the_fly_run_and_reuses_its_cache(support, tmp_path):
    root, model_path, _ = support
    cache = {"reference": "precompute", "cache_dir": str(tmp_path / "cache")}
    runs = {}
    from ayar.train.run import train_from_recipe

    for name, pref in (("fly", {}), ("pre", cache), ("pre-again", cache)):
        recipe = _recipe(root, model_path, "dpo", train={"max_steps": 6, "eval_every": 6},
                         output_dir=str(tmp_path / name), preference=pref)
        runs[name] = train_from_recipe(recipe).result.history
    for a, b in zip(runs["fly"], runs["pre"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5
        assert abs(a["rewards/margins"] - b["rewards/margins"]) < 1e-5
    for a, b in zip(runs["pre"], runs["pre-again"], strict=True):
        assert a["loss"] == b["loss"]
    assert len(list((tmp_path / "cache" / "reference").glob("*.safetensors"))) == 1  # second run: a cache hit


def test_kto_with_an_unbalanced_mix_estimates_kl_from_mismatched_pairs_only(support, tmp_path):
    root, model_path, tokenizer = support
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in SPLITS["train"][:9]]
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in SPLITS["train"][9:12]]
    write_jsonl(tmp_path / "kto.jsonl", rows)
    items, stats = read_kto(str(tmp_path / "kto.jsonl"), tokenizer, 512, seed=0)  # long enough: no cut
    assert (stats.desirable, stats.undesirable) == (9, 3)
    completions = [tuple(i.completion) for i in items]
    for item in items:
        assert tuple(item.kl_completion) != tuple(item.completion)  # never its own reply
        assert tuple(item.kl_completion) in completions  # another example's reply
    assert sorted(tuple(i.kl_completion) for i in items) == sorted(completions)  # each used once

    recipe = _recipe(root, model_path, "kto", kto={"undesirable_weight": 3.0})
    objective = make_objective(recipe, Reference("adapter_disabled"))
    model = _lora_model(model_path)
    batch = objective.collate(items, tokenizer.pad_token_id)
    terms, stats_ = objective.wrap(model)(**batch)
    # by hand from the pieces: KL over the mismatched rows, then eq. 7 with the weights
    with torch.no_grad():
        pol = sequence_logps(model, batch["input_ids"], batch["labels"], batch["attention_mask"])[0]
        kl_rows = (batch["kl_input_ids"], batch["kl_labels"], batch["kl_attention_mask"])
        pol_kl = sequence_logps(model, *kl_rows)[0]
        with model.disable_adapter():
            ref = sequence_logps(model, batch["input_ids"], batch["labels"], batch["attention_mask"])[0]
            ref_kl = sequence_logps(model, *kl_rows)[0]
    z0 = max(float((pol_kl - ref_kl).mean()), 0.0)
    ratio = pol - ref
    expected = sum(1 - torch.sigmoid(0.1 * (r - z0)) if d else 3.0 * (1 - torch.sigmoid(0.1 * (z0 - r)))
                   for r, d in zip(ratio, batch["desirable"], strict=True))
    assert abs(float(terms["examples"]) - float(expected)) < 1e-5
    assert abs(float(stats_["kl"][0] / stats_["kl"][1]) - z0) < 1e-6


def _heldout_accuracy(run_dir) -> tuple[float, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "eval_rewards/accuracy" in r][-1]
    return last["eval_rewards/accuracy"], last["eval_rewards/margins"]


# minimum held-out reward accuracy after 50 steps, and minimum rise of the mean reward margin (ORPO's rewards
# are beta * per-token mean log-probs with beta 0.1, so its margins are on a smaller scale)
@pytest.mark.parametrize("method,sections,minimum,margin_rise", [
    ("dpo", {}, 0.9, 0.05),
    ("orpo", {}, 0.8, 0.005),
    ("simpo", {}, 0.9, 0.05),
])
@pytest.mark.slow
def test_training_raises_heldout_reward_accuracy(support, method, sections, minimum, margin_rise):
    """50 steps on the demo's formal (chosen) / informal (rejected) pairs; held-out pairs are evaluated
    before (step 0, through the same evaluation) and after."""
    from accelerate import Accelerator

    from ayar.train.loop import evaluate
    from ayar.train.run import train_from_recipe

    root, model_path, tokenizer = support
    recipe = _recipe(root, model_path, method, **sections)
    val, _ = read_pairs(recipe.data.val, tokenizer, 128)
    before_model = _lora_model(model_path, perturb=False)
    objective = make_objective(recipe, Reference("adapter_disabled"))
    _, before = evaluate(objective.wrap(before_model), val, tokenizer.pad_token_id, 8, Accelerator(cpu=True),
                         None, objective)
    train_from_recipe(recipe, overwrite=True)
    recipe_dir = Path(recipe.output_dir)
    accuracy, margin = _heldout_accuracy(recipe_dir)
    assert accuracy >= minimum, (method, before, accuracy)
    assert margin > before["rewards/margins"] + margin_rise, (method, before, margin)
    summary = json.loads((recipe_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["data"]["examples"] == 240


@pytest.mark.slow
def test_bad_pairs_are_dropped_and_reported_or_stop_the_run(support, tmp_path):
    root, model_path, tokenizer = support
    good = SPLITS["train"][:6]
    rows = good[:2] + [
        {"prompt": "Siparişim nerede?", "chosen": "Aynı yanıt.", "rejected": "Aynı yanıt."},  # line 3: identical
        {"prompt": "Kargo ne zaman gelir?", "chosen": "  ", "rejected": "Yarın gelir."},  # line 4: empty
        {"prompt": "uzun soru " * 200, "chosen": "Tamam.", "rejected": "Olur."},  # line 5: prompt too long
    ] + good[2:]
    write_jsonl(tmp_path / "bad.jsonl", rows)
    pairs, stats = read_pairs(str(tmp_path / "bad.jsonl"), tokenizer, 128)
    assert len(pairs) == 6 and stats.records == 9
    assert sum(stats.dropped.values()) == 3
    assert stats.dropped["identical chosen and rejected"] == 1 and stats.dropped["empty completion"] == 1
    assert [n for k, n in stats.dropped.items() if "leaves no room for a completion" in k] == [1]
    # max_prompt_length keeps the prompt's end and leaves room: the long prompt becomes usable
    pairs, stats = read_pairs(str(tmp_path / "bad.jsonl"), tokenizer, 128, max_prompt_length=40)
    assert len(pairs) == 7 and stats.truncated >= 1 and max(len(p.prompt) for p in pairs) <= 40

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        f"model: {{path: {model_path}, dtype: fp32}}\n"
        f"data: {{train: {tmp_path / 'bad.jsonl'}, max_length: 128}}\n"
        "method: dpo\npreference: {bad_pairs: error}\n"
        f"train: {{max_steps: 1, micro_batch_size: 2, tracking: none}}\noutput_dir: {tmp_path / 'out'}\n",
        encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ayar.cli", "train", str(recipe_path)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "bad.jsonl:3: identical chosen and rejected" in proc.stderr
    assert "bad_pairs: drop" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_dpo_starts_from_an_sft_run(support, tmp_path):
    """Chaining: SFT, then DPO from its adapter, merged or continued. At the first step the policy equals
    the reference (the SFT model), so the loss is log 2 — it would not be if the reference were the
    bare base."""
    from ayar.train.run import train_from_recipe

    root, model_path, _ = support
    write_jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": p["prompt"]},
                                                        {"role": "assistant", "content": p["chosen"]}]}
                                          for p in SPLITS["train"][:64]])
    sft = validate_recipe({"model": {"path": str(model_path), "dtype": "fp32"},
                           "data": {"train": str(tmp_path / "sft.jsonl"), "max_length": 128},
                           "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
                           "train": {"learning_rate": 1e-2, "max_steps": 8, "micro_batch_size": 8,
                                     "precision": "fp32", "tracking": "none"},
                           "output_dir": str(tmp_path / "sft")})
    train_from_recipe(sft)
    for mode, pref in (("merge", {}), ("continue", {"reference": "precompute", "cache_dir": str(tmp_path / "c")})):
        recipe = _recipe(root, model_path, "dpo", model={"init_adapter": str(tmp_path / "sft"),
                                                         "init_adapter_mode": mode},
                         train={"max_steps": 3, "log_every": 1}, preference=pref,
                         output_dir=str(tmp_path / f"dpo-{mode}"))
        history = train_from_recipe(recipe).result.history
        assert abs(history[0]["loss"] - math.log(2)) < 1e-5, (mode, history[0])
        assert history[-1]["loss"] < history[0]["loss"]
    # a third stage on top of the chained DPO run is refused (its adapter only makes sense on base + SFT)
    chained = _recipe(root, model_path, "dpo", model={"init_adapter": str(tmp_path / "dpo-merge")},
                      output_dir=str(tmp_path / "third"))
    with pytest.raises(AyarError, match="chains of init adapters are not supported"):
        train_from_recipe(chained)
    with pytest.raises(RecipeError, match="adapter_disabled"):
        _recipe(root, model_path, "dpo", model={"init_adapter": str(tmp_path / "sft"),
                                                "init_adapter_mode": "continue"},
                preference={"reference": "adapter_disabled"})


@pytest.mark.slow
def test_full_fine_tuning_dpo_copy_reference_equals_precomputed(support, tmp_path):
    """Full fine-tuning: a frozen copy as reference (auto), or the model's step-0 log-probs precomputed."""
    from ayar.train.run import train_from_recipe

    root, model_path, _ = support
    histories = {}
    for name, pref in (("copy", {}), ("precompute", {"reference": "precompute", "cache_dir": str(tmp_path / "c")})):
        recipe = _recipe(root, model_path, "dpo", adapter={"type": "full"},
                         train={"max_steps": 4, "learning_rate": 1e-3, "log_every": 1, "eval_every": 4},
                         preference=pref, output_dir=str(tmp_path / name))
        histories[name] = train_from_recipe(recipe).result.history
    assert abs(histories["copy"][0]["loss"] - math.log(2)) < 1e-6
    for a, b in zip(histories["copy"], histories["precompute"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["rewards/margins"] - b["rewards/margins"]) < 1e-5
    assert histories["copy"][-1]["loss"] < histories["copy"][0]["loss"]


@pytest.mark.slow
def test_ayar_eval_on_heldout_pairs_reports_the_training_reward_accuracy(support, tmp_path):
    """`ayar eval RUN --data pairs.jsonl` scores held-out pairs with the run's own objective: the same
    reward accuracy and margin the training loop logged on the same pairs at its last evaluation."""
    from ayar.eval.compare import evaluate_run, section_for_run
    from ayar.train.run import train_from_recipe

    root, model_path, _ = support
    recipe = _recipe(root, model_path, "dpo", train={"max_steps": 10, "eval_every": 10},
                     output_dir=str(tmp_path / "dpo"))
    train_from_recipe(recipe)
    logged, margin = _heldout_accuracy(tmp_path / "dpo")
    result = evaluate_run(tmp_path / "dpo", section_for_run(tmp_path / "dpo", data=root / "val.jsonl"))
    scores = json.loads((tmp_path / "dpo" / "eval" / "preference.json").read_text())
    assert scores == result["preference"] and scores["n_pairs"] == 48
    assert abs(scores["tuned"]["reward_accuracy"] - logged) < 1e-9
    assert abs(scores["tuned"]["margin"] - margin) < 1e-5
    assert scores["tuned"]["prefers_chosen"] > scores["base"]["prefers_chosen"]
    assert (tmp_path / "dpo" / "report.html").is_file()


def test_full_fine_tuning_with_a_4bit_reference(support, tmp_path):
    """reference: copy with reference_quantization nf4 loads a 4-bit frozen base: it is a different model
    (first loss not exactly ln 2) but close to the policy, and training proceeds."""
    pytest.importorskip("bitsandbytes")
    from ayar.train.run import train_from_recipe

    root, model_path, _ = support
    recipe = _recipe(root, model_path, "dpo", adapter={"type": "full"},
                     train={"max_steps": 4, "learning_rate": 1e-3, "log_every": 1, "eval_every": 4},
                     preference={"reference": "copy", "reference_quantization": "nf4"}, output_dir=str(tmp_path / "q"))
    history = train_from_recipe(recipe).result.history
    first = history[0]["loss"]
    assert 1e-6 < abs(first - math.log(2)) < 0.05, first
    assert history[-1]["loss"] < first


def _trl_pieces(model, batch, n):
    """TRL's own log-prob and NLL computations (CPOTrainer.get_batch_logps, cross-entropy over labels) on the
    tiny model's full logits for the same batch."""
    from trl.experimental.cpo import CPOTrainer

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"]
    sums = CPOTrainer.get_batch_logps(logits, labels)
    means = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True)
    nll = torch.nn.functional.cross_entropy(logits[:n, :-1].reshape(-1, logits.shape[-1]), labels[:n, 1:].reshape(-1))
    return sums, means, nll


@pytest.mark.parametrize("method", ["orpo", "cpo", "simpo"])
def test_reference_free_objectives_equal_trl_on_the_same_batch(support, method):
    """The whole objective (preference term + chosen NLL with its token normalisation) on one tiny-model
    batch, against TRL's functions applied to TRL's log-probs of that batch. One deliberate difference:
    TRL's ORPOTrainer takes the NLL over prompt *and* reply tokens; ayar (as the ORPO paper's L_SFT) over
    the reply, which is what both sides use here."""
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    root, model_path, tokenizer = support
    pairs, _ = read_pairs(str(root / "train.jsonl"), tokenizer, 128)
    recipe = _recipe(root, model_path, method)
    objective = make_objective(recipe, None)
    batch = objective.collate(pairs[:6], tokenizer.pad_token_id)
    model = _lora_model(model_path)
    with torch.no_grad():
        terms, _ = objective.wrap(model)(**batch)
        counts = objective.counts(batch)
        ours = sum(float(terms[k]) / counts[k] for k in terms)
        sums, means, nll = _trl_pieces(model, batch, 6)
    cfg = recipe.method_config()
    if method == "orpo":
        losses = ORPOTrainer.odds_ratio_loss(_trl_self(beta=cfg.beta), means[:6], means[6:])[0]
        expected = cfg.nll_weight * nll - losses.mean()
    else:
        trl_self = _trl_self(beta=cfg.beta, loss_type="simpo" if method == "simpo" else "sigmoid",
                             simpo_gamma=getattr(cfg, "gamma", 0.0), alpha=0.0, label_smoothing=cfg.label_smoothing)
        logps = means if method == "simpo" else sums
        expected = CPOTrainer.cpo_loss(trl_self, logps[:6], logps[6:])[0].mean() + cfg.nll_weight * nll
    assert abs(ours - float(expected)) < 1e-5 * max(1.0, abs(float(expected))), (method, ours, float(expected))


def test_kto_objective_equals_trl_on_the_same_batch(support, tmp_path):
    """KTO on one tiny-model batch (unbalanced 5/3): ayar's objective against KTOTrainer._compute_loss fed with
    per-token log-probs of the same rows (policy, mismatched KL rows, and the adapter-disabled reference)."""
    from trl import KTOTrainer

    root, model_path, tokenizer = support
    rows = [{"prompt": p["prompt"], "completion": p["chosen"], "label": True} for p in SPLITS["train"][:5]]
    rows += [{"prompt": p["prompt"], "completion": p["rejected"], "label": False} for p in SPLITS["train"][5:8]]
    write_jsonl(tmp_path / "kto.jsonl", rows)
    items, _ = read_kto(str(tmp_path / "kto.jsonl"), tokenizer, 128, seed=1)
    recipe = _recipe(root, model_path, "kto", kto={"undesirable_weight": 2.0})
    objective = make_objective(recipe, Reference("adapter_disabled"))
    batch = objective.collate(items, tokenizer.pad_token_id)
    model = _lora_model(model_path)
    model.eval()

    def per_token(ids, labels, mask):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        targets = labels[:, 1:]
        logps = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return logps * targets.ne(-100)

    with torch.no_grad():
        terms, _ = objective.wrap(model)(**batch)
        ours = float(terms["examples"]) / len(items)
        policy = per_token(batch["input_ids"], batch["labels"], batch["attention_mask"])
        kl_rows = (batch["kl_input_ids"], batch["kl_labels"], batch["kl_attention_mask"])
        policy_kl = per_token(*kl_rows).sum(-1)
        with model.disable_adapter():
            reference = per_token(batch["input_ids"], batch["labels"], batch["attention_mask"]).sum(-1)
            reference_kl = per_token(*kl_rows).sum(-1)

    def trl_model(**kwargs):
        zeros = torch.zeros_like(policy)
        return SimpleNamespace(log_probs=policy, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    trl_self = _trl_self(beta=0.1, loss_type="kto", desirable_weight=1.0, undesirable_weight=2.0,
                         _compute_kl_logps=lambda model, b: policy_kl)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
              "completion_mask": batch["labels"].ne(-100).long(), "label": batch["desirable"],
              "ref_logps": reference, "ref_KL_logps": reference_kl}
    expected = float(KTOTrainer._compute_loss(trl_self, trl_model, inputs, return_outputs=False))
    assert abs(ours - expected) < 1e-6, (ours, expected)
