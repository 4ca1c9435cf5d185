"""method: distill with the teacher's top-k precomputed (distill.teacher_logprobs: precompute): the top-k loss by
hand on a five-token vocabulary, equal to the on-the-fly loss and gradients when k is the vocabulary, the cache
reused and invalidated, the teacher released before training, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import gc
import math
import shutil
import weakref

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_distill_loss import _load

from ayar.chat.tokenize import encode_conversation
from ayar.recipe import validate_recipe
from ayar.train.distill import DistillObjective, forward_kl, teacher_topk, topk_forward_kl
from ayar.train.teacher import precompute_teacher, teacher_key
from helpers import colour_conversations, write_jsonl

CPU = torch.device("cpu")
P = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625])  # the teacher on a five-token vocabulary


def test_topk_kl_by_hand_on_five_tokens():
    ids, logps, rest = teacher_topk(P.log()[None], 2)  # logits log p at T = 1: softmax gives p back
    assert ids.tolist() == [[0, 1]] and logps.exp().tolist()[0] == pytest.approx([0.5, 0.25])
    assert rest.exp().item() == pytest.approx(0.25)  # p_R = 1/8 + 1/16 + 1/16
    # student uniform, q_v = 1/5, so q_R = 3/5:
    # 1/2 ln(1/2 / 1/5) + 1/4 ln(1/4 / 1/5) + 1/4 ln(1/4 / 3/5)
    expected = 0.5 * math.log(2.5) + 0.25 * math.log(1.25) + 0.25 * math.log(0.25 / 0.6)
    assert expected == pytest.approx(0.295064, abs=1e-6)
    uniform = torch.zeros(1, 5)
    assert topk_forward_kl(uniform, ids, logps, rest).item() == pytest.approx(expected, abs=1e-6)
    # the full KL is larger (0.309787): merging tokens into one bucket can only lose information
    full = sum(p * math.log(p / 0.2) for p in P.tolist())
    assert full == pytest.approx(0.309787, abs=1e-6) and full > expected

    # T = 2: the teacher's logits 2 log p give p again; the student's (2 ln 2, 0, 0, 0, 0) give q = (2, 1, 1, 1, 1) / 6,
    # q_R = 1/2; the term is scaled by T^2 = 4
    ids2, logps2, rest2 = teacher_topk(2 * P.log()[None], 2, temperature=2.0)
    torch.testing.assert_close(logps2, logps)
    student = torch.tensor([[2 * math.log(2), 0.0, 0.0, 0.0, 0.0]])
    expected_t2 = 4 * (0.5 * math.log(0.5 * 3) + 0.25 * math.log(0.25 * 6) + 0.25 * math.log(0.25 / 0.5))
    assert expected_t2 == pytest.approx(0.523248, abs=1e-6)
    assert topk_forward_kl(student, ids2, logps2, rest2, 2.0).item() == pytest.approx(expected_t2, abs=1e-6)

    # k = 5 (R empty) and k = 4 (R one token: q is trivially proportional to p there) are the full KL
    for k in (5, 4):
        ids_k, logps_k, rest_k = teacher_topk(P.log()[None], k)
        assert topk_forward_kl(uniform, ids_k, logps_k, rest_k).item() == pytest.approx(full, abs=1e-6)
    assert teacher_topk(P.log()[None], 5)[2].item() == -math.inf


def test_topk_gradient_equals_the_full_kl_gradient_when_k_is_the_vocabulary():
    torch.manual_seed(0)
    teacher = torch.randn(4, 7) * 3
    student = torch.randn(4, 7, requires_grad=True)
    forward_kl(student, teacher, 1.5).sum().backward()
    expected = student.grad.clone()
    student.grad = None
    topk_forward_kl(student, *teacher_topk(teacher, 7, 1.5), 1.5).sum().backward()
    torch.testing.assert_close(student.grad, expected, atol=1e-6, rtol=1e-5)
    # a teacher whose rest mass underflows to 0 in fp32 gives a finite loss and gradient
    student.grad = None
    peaked = torch.tensor([[200.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    ids, logps, rest = teacher_topk(peaked, 2)
    assert rest.item() < -150
    loss = topk_forward_kl(student[:1], ids, logps, torch.full_like(rest, -math.inf))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(student.grad).all()


def _examples(tokenizer, n=6, seed=4):
    return [encode_conversation(tokenizer, c["messages"]) for c in colour_conversations(n, seed=seed)]


def _precompute(load, examples, k, tmp_path, key_parts=None, temperature=2.0, val=()):
    return precompute_teacher(load, [examples, list(val)], k=k, temperature=temperature, pad_id=0, batch_size=4,
                              amp=None, device=CPU, key_parts=key_parts or {"top_k": k, "temperature": temperature},
                              folder=str(tmp_path / "cache"))


def _loss_and_grads(student, objective, batch):
    student.zero_grad(set_to_none=True)
    terms, stats = objective.wrap(student)(**batch)
    terms["tokens"].backward()
    return terms["tokens"].item(), stats["distill/kl"][0].item(), {
        n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}


def test_precomputed_top_k_of_the_whole_vocabulary_equals_on_the_fly(two_tiny, tmp_path):
    (student, tokenizer), (teacher, _) = _load(two_tiny[0]), _load(two_tiny[1])
    student.requires_grad_(True)
    examples = _examples(tokenizer)
    on_the_fly = DistillObjective(teacher, temperature=2.0, kl_weight=0.7, sft_weight=0.3)
    loss_a, kl_a, grads_a = _loss_and_grads(student, on_the_fly, on_the_fly.collate(examples, 0))

    (taught, _), _, hit = _precompute(lambda: teacher, examples, 512, tmp_path)
    assert not hit and taught[0].top_ids.shape == (sum(t != -100 for t in examples[0].labels[1:]), 512)
    precomputed = DistillObjective(None, temperature=2.0, kl_weight=0.7, sft_weight=0.3)
    batch = precomputed.collate(taught, 0)
    assert batch["teacher_ids"].shape[0] == precomputed.counts(batch)["tokens"]
    loss_b, kl_b, grads_b = _loss_and_grads(student, precomputed, batch)
    assert kl_a > 0 and loss_b == pytest.approx(loss_a, rel=1e-6) and kl_b == pytest.approx(kl_a, rel=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=1e-5)

    # a small k: the coarser KL is below the full one (by the log-sum inequality)
    (taught8, _), _, _ = _precompute(lambda: teacher, examples, 8, tmp_path)
    kl_8 = _loss_and_grads(student, precomputed, precomputed.collate(taught8, 0))[1]
    assert 0 < kl_8 < kl_a
    # a process left without a share of the batch: no targets, no teacher rows, no loss
    silent = precomputed.collate(taught8[:1], 0)
    precomputed.silence(silent)
    assert silent["teacher_ids"].shape[0] == 0
    assert precomputed.wrap(student)(**silent)[0]["tokens"].item() == 0.0


def _distill_recipe(two_tiny, tmp_path, **distill):
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(24, seed=0))
    write_jsonl(tmp_path / "val.jsonl", colour_conversations(6, seed=9))
    return validate_recipe({
        "model": {"path": str(two_tiny[0]), "dtype": "fp32"}, "method": "distill",
        "distill": {"teacher": str(two_tiny[1]), "temperature": 2.0, "teacher_logprobs": "precompute",
                    "cache_dir": "cache", **distill},
        "data": {"train": "train.jsonl", "val": "val.jsonl", "max_length": 96},
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.1},
        "train": {"learning_rate": 1e-2, "max_steps": 6, "micro_batch_size": 4, "gradient_accumulation_steps": 2,
                  "precision": "fp32", "log_every": 1, "eval_every": 3, "save_every": 2, "tracking": "none",
                  "warmup_ratio": 0.0},
        "output_dir": "run"}, base_dir=tmp_path)


def test_cache_is_reused_and_invalidated_and_the_teacher_released(two_tiny, tmp_path):
    tokenizer = _load(two_tiny[0])[1]
    loaded = []

    def load():
        teacher = _load(two_tiny[1])[0]
        loaded.append(weakref.ref(teacher))
        return teacher

    recipe = _distill_recipe(two_tiny, tmp_path)

    def key(k, temperature=2.0, recipe=recipe):
        r = recipe.model_copy(update={"distill": recipe.distill.model_copy(update={"temperature": temperature})})
        return teacher_key(r, tokenizer, k, 512, None, CPU)

    examples = _examples(tokenizer, 8)
    first, path, hit = _precompute(load, examples, 16, tmp_path, key(16), val=examples[:2])
    assert not hit and len(loaded) == 1
    gc.collect()
    assert loaded[0]() is None, "the teacher is still referenced after the precompute pass"
    assert path.parent == tmp_path / "cache" / "teacher" and path.suffix == ".safetensors"
    assert set(load_file(str(path))) == {f"{s}.{p}" for s in ("train", "val") for p in ("ids", "logps", "rest",
                                                                                       "offsets")}

    again, path_again, hit = _precompute(load, examples, 16, tmp_path, key(16), val=examples[:2])
    assert hit and path_again == path and len(loaded) == 1  # the teacher was not loaded again
    for a, b in zip(first[0] + first[1], again[0] + again[1], strict=True):
        assert torch.equal(a.top_ids, b.top_ids) and torch.equal(a.top_logps, b.top_logps)

    # other data, another k or temperature, another teacher: another file, and the teacher runs again
    for changed in ((examples[:-1], 16, key(16)), (examples, 8, key(8)), (examples, 16, key(16, 1.0))):
        _, other, hit = _precompute(load, *changed[:2], tmp_path, changed[2], val=examples[:2])
        assert not hit and other != path
    assert len(loaded) == 4
    edited = list(examples)
    edited[3] = type(examples[3])(examples[3].input_ids[:-1] + [examples[3].input_ids[-1] ^ 1], examples[3].labels)
    assert not _precompute(load, edited, 16, tmp_path, key(16), val=examples[:2])[2]

    teacher2 = tmp_path / "teacher2"
    shutil.copytree(two_tiny[1], teacher2)
    weights = load_file(str(teacher2 / "model.safetensors"))
    weights["model.norm.weight"] += 1.0
    save_file(weights, str(teacher2 / "model.safetensors"), metadata={"format": "pt"})
    moved = recipe.model_copy(update={"distill": recipe.distill.model_copy(update={"teacher": str(teacher2)})})
    assert teacher_key(moved, tokenizer, 16, 512, None, CPU)["teacher"] != key(16)["teacher"]
    assert key(16) != teacher_key(recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"max_length": 64})}), tokenizer, 16, 512, None, CPU)

    # a file that does not hold these examples' rows (e.g. cut short) is never used: recomputed
    save_file({"train.ids": torch.zeros(1, 16, dtype=torch.int32)}, str(path), metadata={"key": path.stem})
    assert not _precompute(load, examples, 16, tmp_path, key(16), val=examples[:2])[2]


@pytest.mark.slow
def test_precomputed_run_resumes_to_the_same_weights_without_the_teacher(two_tiny, tmp_path, monkeypatch):
    import ayar.train.run as run_module
    import ayar.train.teacher as teacher_module
    from ayar.train.run import train_from_recipe

    whole = tmp_path / "whole"
    whole.mkdir()
    expected = train_from_recipe(_distill_recipe(two_tiny, whole)).result
    expected_adapter = load_file(str(whole / "run/adapter/adapter_model.safetensors"))

    real_load, real_fit, teachers = teacher_module.load_teacher, run_module.fit, []

    def load(*args, **kwargs):
        teachers.append(weakref.ref(teacher := real_load(*args, **kwargs)))
        return teacher

    def crashing_fit(*args, progress, **kwargs):
        gc.collect()
        assert teachers and teachers[0]() is None, "the teacher is still in memory when training starts"
        assert kwargs["objective"].teacher is None

        def crash(step, total, record):
            progress(step, total, record)
            if step == 5:
                raise RuntimeError("simulated crash")

        return real_fit(*args, progress=crash, **kwargs)

    monkeypatch.setattr(teacher_module, "load_teacher", load)
    monkeypatch.setattr(run_module, "fit", crashing_fit)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_from_recipe(_distill_recipe(two_tiny, tmp_path))
    assert len(teachers) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded although its top-k are cached")

    monkeypatch.setattr(teacher_module, "load_teacher", refuse)
    monkeypatch.setattr(run_module, "fit", real_fit)
    resumed = train_from_recipe(_distill_recipe(two_tiny, tmp_path)).result
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in expected.history], abs=1e-6)
    assert [r["distill/kl"] for r in resumed.history] == pytest.approx(
        [r["distill/kl"] for r in expected.history], abs=1e-6)
    assert resumed.eval_loss == pytest.approx(expected.eval_loss, abs=1e-6)
    got = load_file(str(tmp_path / "run/adapter/adapter_model.safetensors"))
    for name, value in expected_adapter.items():
        torch.testing.assert_close(got[name], value, atol=1e-6, rtol=0)


def test_recipe_settings_of_precompute(tmp_path):
    base = {"model": {"path": "m"}, "data": {"train": "t.jsonl"}, "method": "distill"}
    with pytest.raises(Exception, match="top_k applies to teacher_logprobs: precompute") as info:
        validate_recipe({**base, "distill": {"teacher": "t", "top_k": 8, "cache_dir": "c"}})
    assert "cache_dir applies to teacher_logprobs: precompute" in str(info.value)  # both problems at once
    with pytest.raises(Exception, match="top_k"):
        validate_recipe({**base, "distill": {"teacher": "t", "teacher_logprobs": "precompute", "top_k": 0}})
    recipe = validate_recipe({**base, "distill": {"teacher": "t", "teacher_logprobs": "precompute",
                                                  "cache_dir": "c"}}, base_dir=tmp_path)
    assert recipe.distill.cache_dir == str((tmp_path / "c").resolve()) and recipe.distill.top_k == 64
    # a resolved recipe written out (every default included) loads again, on the fly too
    import yaml

    for mode in ("on_the_fly", "precompute"):
        r = validate_recipe({**base, "distill": {"teacher": "t", "teacher_logprobs": mode}})
        assert validate_recipe(yaml.safe_load(r.to_yaml())).distill == r.distill
