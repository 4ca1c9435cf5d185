"""method: distill — forward KL against hand computations, KL = 0 with teacher = student, the shared-tokenizer
check, and a short run on tiny models in which the student moves towards the teacher."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from ayar.chat.tokenize import IGNORE_INDEX
from ayar.errors import AyarError
from ayar.recipe import validate_recipe
from ayar.train.distill import DistillObjective, check_shared_tokenizer, forward_kl
from helpers import colour_conversations, write_jsonl


def test_forward_kl_by_hand():
    student = torch.tensor([[0.0, 0.0]])  # q = (1/2, 1/2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p = (3/4, 1/4)
    # KL(p || q) = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 3/4 ln 1.5 - 1/4 ln 2
    expected = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert forward_kl(student, teacher, 1.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.130812, abs=1e-6)
    # T = 2: p = softmax(ln3 / 2, 0) = (sqrt3, 1) / (sqrt3 + 1), q unchanged; the term is scaled by T^2 = 4
    p1 = math.sqrt(3) / (math.sqrt(3) + 1)
    expected_t2 = 4 * (p1 * math.log(p1 / 0.5) + (1 - p1) * math.log((1 - p1) / 0.5))
    assert forward_kl(student, teacher, 2.0).item() == pytest.approx(expected_t2, abs=1e-6)
    # forward, not reverse: KL(p || q) != KL(q || p)
    assert forward_kl(teacher, student, 1.0).item() != pytest.approx(expected, abs=1e-3)
    assert forward_kl(teacher, teacher, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def _load(path):
    from ayar.model.run_folder import load_for_inference

    return load_for_inference(path, dtype="fp32", device=torch.device("cpu"))


def _batch(tokenizer):
    from ayar.chat.tokenize import encode_conversation
    from ayar.train.batching import collate

    examples = [encode_conversation(tokenizer, c["messages"]) for c in colour_conversations(3, seed=4)]
    return collate(examples, tokenizer.pad_token_id)


def test_objective_equals_a_hand_computation(two_tiny):
    (student, tokenizer), (teacher, _) = _load(two_tiny[0]), _load(two_tiny[1])
    batch = _batch(tokenizer)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    mask = targets.ne(IGNORE_INDEX)
    s, t = s_logits[:, :-1][mask] / 2.0, t_logits[:, :-1][mask] / 2.0  # T = 2
    p, q = F.softmax(t, dim=-1), F.softmax(s, dim=-1)
    kl = 4.0 * (p * (p.log() - q.log())).sum()  # T^2 * sum over target positions of KL(p || q)
    nll = F.cross_entropy(s_logits[:, :-1][mask], targets[mask], reduction="sum")

    objective = DistillObjective(teacher, temperature=2.0, kl_weight=0.7, sft_weight=0.3)
    with torch.no_grad():
        terms, stats = objective.wrap(student)(**batch)
    assert terms["tokens"].item() == pytest.approx((0.7 * kl + 0.3 * nll).item(), rel=1e-5)
    assert stats["distill/kl"][0].item() == pytest.approx(kl.item(), rel=1e-5)
    assert stats["distill/kl"][1].item() == objective.counts(batch)["tokens"] == mask.sum().item()


def test_kl_is_zero_when_the_teacher_is_the_student(two_tiny):
    student, tokenizer = _load(two_tiny[0])
    batch = _batch(tokenizer)
    with torch.no_grad():
        terms, stats = DistillObjective(student, temperature=1.5).wrap(student)(**batch)
    assert stats["distill/kl"][0].item() == pytest.approx(0.0, abs=1e-4)
    assert terms["tokens"].item() == pytest.approx(0.0, abs=1e-4)


def test_teacher_and_student_must_share_a_tokenizer():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

    same = {"a": 0, "b": 1}
    check_shared_tokenizer(Tok(same), Tok(dict(same)), 2, 2, "teacher")
    with pytest.raises(AyarError, match="does not share the student's tokenizer .* 2 differ"):
        check_shared_tokenizer(Tok(same), Tok({"a": 1, "b": 0}), 2, 2, "teacher")
    with pytest.raises(AyarError, match="output head scores 3 tokens"):
        check_shared_tokenizer(Tok(same), Tok(dict(same)), 2, 3, "teacher")


def test_recipe_rules_for_distill(tmp_path):
    base = {"model": {"path": "m"}, "data": {"train": "t.jsonl"}}
    with pytest.raises(Exception, match="method distill needs a `distill:` section"):
        validate_recipe({**base, "method": "distill"})
    with pytest.raises(Exception, match="section `distill` is set but method is 'sft'"):
        validate_recipe({**base, "distill": {"teacher": "t"}})
    with pytest.raises(Exception, match="nothing would be learned"):
        validate_recipe({**base, "method": "distill", "distill": {"teacher": "t", "kl_weight": 0}})
    recipe = validate_recipe({**base, "method": "distill", "distill": {"teacher": "./teacher"}}, base_dir=tmp_path)
    assert recipe.distill.teacher == str((tmp_path / "teacher").resolve())


def _kl_on(student, teacher, batch) -> float:
    with torch.no_grad():
        _, stats = DistillObjective(teacher).wrap(student)(**batch)
    return (stats["distill/kl"][0] / stats["distill/kl"][1]).item()  # mean KL per target token


@pytest.mark.slow
# recorded on these tiny models (mean KL per target token, held-out batch): full 0.0263 -> 0.0031, lora r=8
# 0.0263 -> 0.0216 (a rank-8 update of two random layers moves less)
@pytest.mark.parametrize(("adapter", "at_most"), [("full", 0.5), ("lora", 0.9)])
def test_distill_run_moves_the_student_towards_the_teacher(tmp_path, two_tiny, adapter, at_most):
    from ayar.train.run import train_from_recipe

    write_jsonl(tmp_path / "train.jsonl", colour_conversations(64, seed=0))
    recipe = validate_recipe({
        "model": {"path": str(two_tiny[0]), "dtype": "fp32"}, "method": "distill",
        "distill": {"teacher": str(two_tiny[1]), "temperature": 1.0},
        "data": {"train": "train.jsonl", "max_length": 128},
        "adapter": {"type": "full"} if adapter == "full" else {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"learning_rate": 3e-3 if adapter == "full" else 3e-2, "max_steps": 15, "micro_batch_size": 8,
                  "precision": "fp32", "log_every": 1, "tracking": "none", "warmup_ratio": 0.0, "save_every": 100},
        "output_dir": "run"}, base_dir=tmp_path)
    (student, tokenizer), (teacher, _) = _load(two_tiny[0]), _load(two_tiny[1])
    batch = _batch(tokenizer)  # held-out conversations (another seed)
    before = _kl_on(student, teacher, batch)
    train_from_recipe(recipe)
    after = _kl_on(_load(tmp_path / "run")[0], teacher, batch)
    assert after < at_most * before, (before, after)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("distill/kl" in m and "distill/nll" in m for m in metrics) and len(metrics) == 15
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["method"] == "distill"
