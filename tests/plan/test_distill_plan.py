"""`ayar plan` for method: distill counts the teacher: its weights resident on the fly (not when precomputed), its
forward FLOPs on every micro-batch (on the fly) or once over the data (precompute), the precompute pass's peak and
the top-k file's size.

Teacher (tiny Llama, the student's tokenizer): hidden 128, 3 layers, 4 heads x 32, 2 KV heads, MLP 256, vocab 512.
Per layer the linear weights are q and o 128x128, k and v 64x128, gate/up/down 256x128: 147,456; three: 442,368.
"""

from __future__ import annotations

import math

import pytest

from ayar.plan.catalogue import Calibration, Device
from ayar.plan.estimate import estimate_device, fit_row, plan_recipe
from ayar.plan.report import plan_to_dict, render
from ayar.recipe import load_recipe
from helpers import corpus

LIN_T, LAYERS_T, HIDDEN_T, VOCAB = 442_368, 3, 128, 512
CAL = Calibration(mfu=(0.5, 0.5), step_overhead_s=1e-3, overhead_bytes=0.0, activation_factor=1.0, source="test")
GPU = Device("test-gpu", 80 * 2**30, 1e14, None, "cuda")
CPU = Device("test-cpu", 64 * 2**30, 1e12, None, "cpu")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from ayar.model.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "model", corpus(), arch="llama", vocab_size=VOCAB,
                            hidden_size=HIDDEN_T, intermediate_size=256, num_layers=LAYERS_T, num_heads=4,
                            num_kv_heads=2)


@pytest.fixture(scope="module")
def teacher_parameters(teacher) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(teacher).parameters())


def _plans(sft_recipe, teacher):
    """The plans of sft, distill on the fly and distill precomputed (top 16), on the same student and data."""
    def distill(**settings):
        return plan_recipe(load_recipe(sft_recipe(method="distill", distill={"teacher": str(teacher), **settings}), []))

    return plan_recipe(load_recipe(sft_recipe(), [])), distill(), distill(teacher_logprobs="precompute", top_k=16)


def _teacher_forward_by_hand(rows: int, seq: int, targets: int) -> float:
    tokens = rows * seq
    return 2 * LIN_T * tokens + 2 * LAYERS_T * 128 * seq * tokens + 2 * HIDDEN_T * VOCAB * targets


def test_memory_grows_by_the_teachers_weights_on_the_fly_only(sft_recipe, teacher, teacher_parameters):
    plans = _plans(sft_recipe, teacher)
    sft, fly, pre = (estimate_device(p, GPU, calibrations={"cuda": CAL}) for p in plans)
    assert teacher_parameters == LIN_T + VOCAB * HIDDEN_T + 7 * HIDDEN_T  # tied embedding, 2 norms a layer + final
    assert fly.terms["teacher"] == teacher_parameters * 2  # bf16 on a GPU
    assert fly.terms["teacher_forward"] > 0
    assert fly.peak - sft.peak == pytest.approx(fly.terms["teacher"] + fly.terms["teacher_forward"])
    assert {k: v for k, v in fly.terms.items() if not k.startswith("teacher")} == sft.terms
    assert fly.precompute_peak == 0

    assert pre.terms["teacher"] == pre.terms["teacher_forward"] == 0
    assert pre.peak == sft.peak  # the teacher is gone when training starts
    # the pass before training: the student's weights and the teacher's, and one teacher forward
    assert pre.precompute_peak == pytest.approx(sft.terms["weights"] + sft.terms["adapter"] + teacher_parameters * 2
                                                + fly.terms["teacher_forward"])
    # here the pass needs more than training (a teacher larger than the student, no optimizer yet): it decides the fit
    assert pre.precompute_peak > pre.peak
    small = Device("small", int(pre.precompute_peak) - 1, 1e14, None, "cuda")
    assert not estimate_device(plans[2], small, calibrations={"cuda": CAL}).fits
    assert estimate_device(plans[0], small, calibrations={"cuda": CAL}).fits
    # on the CPU the teacher loads in fp32, and the precomputed top-k are held in RAM with the data
    sft_cpu, fly_cpu, pre_cpu = (estimate_device(p, CPU, calibrations={"cpu": CAL}) for p in plans)
    assert fly_cpu.terms["teacher"] == teacher_parameters * 4
    assert pre_cpu.terms["data"] - sft_cpu.terms["data"] == plans[2].teacher_file_bytes


def test_time_includes_the_teacher_forward(sft_recipe, teacher):
    p_sft, p_fly, p_pre = _plans(sft_recipe, teacher)
    sft, fly, pre = (estimate_device(p, GPU, calibrations={"cuda": CAL}) for p in (p_sft, p_fly, p_pre))
    t = p_fly.recipe.train
    stream = p_fly.stream(t.micro_batch_size, t.gradient_accumulation_steps)
    assert stream.micro_batches == len(stream.shapes)  # 3 steps x 1 micro-batch: every one simulated, no scaling
    every_step = sum(_teacher_forward_by_hand(*shape) for shape in stream.shapes)
    assert fly.teacher_flops == pytest.approx(every_step) and fly.flops - sft.flops == pytest.approx(every_step)
    rate = GPU.peak_flops * 0.5
    fixed = CAL.step_overhead_s * stream.micro_batches * LAYERS_T  # the teacher's layers on every micro-batch
    assert fly.seconds[0] - sft.seconds[0] == pytest.approx(every_step / rate + fixed)

    rows = [row for example in p_pre.profile.rows for row in example]
    assert len(rows) == p_pre.profile.examples == 64  # every example tokenised: no sampling
    once = sum(_teacher_forward_by_hand(1, length, targets) for length, targets in rows)
    assert pre.teacher_flops == pytest.approx(once) and pre.flops - sft.flops == pytest.approx(once)
    fixed = CAL.step_overhead_s * math.ceil(64 / t.micro_batch_size) * LAYERS_T
    assert pre.seconds[0] - sft.seconds[0] == pytest.approx(once / rate + fixed)


def test_top_k_file_and_report(sft_recipe, teacher):
    _, p_fly, p_pre = _plans(sft_recipe, teacher)
    assert p_pre.teacher.top_k == 16 and p_fly.teacher_file_bytes == 0
    assert p_pre.teacher_file_bytes == p_pre.profile.target_tokens * (8 * 16 + 4)
    whole = plan_recipe(load_recipe(sft_recipe(method="distill", distill={
        "teacher": str(teacher), "teacher_logprobs": "precompute", "top_k": 100_000}), []))
    assert whole.teacher.top_k == VOCAB  # more than the vocabulary: all of it
    text = render(p_pre, [fit_row(p_pre, GPU, {"cuda": CAL}, search_batch=False)])
    assert "top-16 precomputed in one pass before training" in text and "then freed" in text
    doc = plan_to_dict(p_fly, [fit_row(p_fly, GPU, {"cuda": CAL}, search_batch=False)])
    assert doc["teacher"]["teacher_logprobs"] == "on_the_fly" and doc["teacher"]["total_parameters"] > 0
    assert doc["devices"][0]["as_written"]["memory_bytes"]["teacher"] > 0
    with pytest.raises(Exception, match="distill.teacher: .* is not a local folder"):
        plan_recipe(load_recipe(sft_recipe(method="distill", distill={"teacher": "org/hub-model"}), []))

