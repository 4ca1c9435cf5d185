"""The fit table's decisions and each advice rule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ayar.plan import advice
from ayar.plan.catalogue import Calibration, Device
from ayar.plan.estimate import estimate_device, fit_row, plan_recipe
from ayar.recipe import Recipe, load_recipe

EXACT = {"cpu": Calibration(mfu=(0.5, 0.5), step_overhead_s=0.0, overhead_bytes=0.0, activation_factor=1.0,
                            source="test")}


def device(memory: float) -> Device:
    return Device("test-gpu", int(memory), 1e12, (1.0, 2.0), "cpu")


def planned(sft_recipe, **sections):
    return plan_recipe(load_recipe(sft_recipe(**sections), []))


def test_fits_as_written_and_largest_micro_batch(sft_recipe):
    p = planned(sft_recipe)
    at4 = estimate_device(p, device(1e12), calibrations=EXACT, micro_batch=4).peak
    row = fit_row(p, device(at4 + 1), EXACT)
    assert row.status == "fits" and row.change == {}
    assert row.max_micro_batch >= 4
    assert estimate_device(p, device(at4 + 1), calibrations=EXACT, micro_batch=row.max_micro_batch).fits
    assert not estimate_device(p, device(at4 + 1), calibrations=EXACT, micro_batch=row.max_micro_batch + 1).fits
    assert row.estimate.cost[1] == pytest.approx(row.estimate.seconds[1] / 3600 * 2.0)


def test_fits_with_gradient_checkpointing(sft_recipe):
    p = planned(sft_recipe, train={"micro_batch_size": 1, "gradient_accumulation_steps": 4})
    plain = estimate_device(p, device(1e12), calibrations=EXACT).peak
    ckpt = estimate_device(p, device(1e12), calibrations=EXACT, checkpointing=True).peak
    assert ckpt < plain
    row = fit_row(p, device((ckpt + plain) / 2), EXACT)
    assert row.status == "fits with gradient checkpointing"
    assert row.change == {"train.gradient_checkpointing": True}


def test_smaller_micro_batch_keeps_the_effective_batch(sft_recipe):
    p = planned(sft_recipe, train={"micro_batch_size": 4, "gradient_accumulation_steps": 1,
                                   "gradient_checkpointing": True})
    at4 = estimate_device(p, device(1e12), calibrations=EXACT).peak
    at2 = estimate_device(p, device(1e12), calibrations=EXACT, micro_batch=2).peak
    row = fit_row(p, device((at2 + at4) / 2), EXACT)
    assert row.status == "fits with micro-batch 2"
    assert row.change == {"train.micro_batch_size": 2, "train.gradient_accumulation_steps": 2}


def test_fits_with_qlora_even_from_full_fine_tuning(sft_recipe):
    p = planned(sft_recipe, model={"dtype": "fp32"}, adapter={"type": "full"},
                train={"micro_batch_size": 1, "gradient_checkpointing": True})
    full = estimate_device(p, device(1e12), calibrations=EXACT).peak
    qlora = estimate_device(p, device(1e12), calibrations=EXACT, quantization="nf4", adapter="lora",
                            checkpointing=True).peak
    assert qlora < full
    row = fit_row(p, device((qlora + full) / 2), EXACT)
    assert row.status == "fits with QLoRA"
    assert row.change == {"model.quantization": "nf4", "adapter.type": "lora", "train.gradient_checkpointing": True}


def test_does_not_fit(sft_recipe):
    row = fit_row(planned(sft_recipe), device(1000), EXACT)
    assert row.status == "does not fit" and row.chosen is None and row.max_micro_batch == 0


# ---------------------------------------------------------------- advice: one test per rule


def plan_stub(examples=5000, records=None, truncated=0, tokenizer_fit=None, **recipe) -> SimpleNamespace:
    r = Recipe.model_validate({"model": {"path": "m"}, "data": {"train": "t.jsonl"}, **recipe})
    return SimpleNamespace(recipe=r, profile=SimpleNamespace(examples=examples, records=records or examples,
                                                             truncated=truncated), tokenizer_fit=tokenizer_fit)


def row_stub(fits=True, status="fits", device_class="cuda", memory=24 * 2**30, peak=2**30, weights=2**28):
    return SimpleNamespace(device=SimpleNamespace(name="RTX-4090", device_class=device_class, memory_bytes=memory),
                           status=status, estimate=SimpleNamespace(fits=fits, peak=peak, terms={"weights": weights}))


def test_rule_data_size():
    assert "usually fails" in advice.data_size(plan_stub(examples=300), []).message
    assert "below the usual minimum" in advice.data_size(plan_stub(examples=800), []).message
    assert advice.data_size(plan_stub(examples=5000), []) is None
    assert advice.data_size(plan_stub(examples=300, method="dpo"), []) is None  # pairs have their own rule


def test_rule_preference_size():
    assert "500" in advice.preference_size(plan_stub(examples=200, method="dpo"), []).message
    assert advice.preference_size(plan_stub(examples=1500, method="dpo"), []) is None
    assert "rated replies" in advice.preference_size(plan_stub(examples=100, method="kto"), []).message
    assert advice.preference_size(plan_stub(examples=100), []) is None


def test_rule_learning_rate():
    assert advice.learning_rate(plan_stub(train={"learning_rate": 1e-4}), []) is None
    high = advice.learning_rate(plan_stub(train={"learning_rate": 1e-3}), [])
    assert "high" in high.message and "forgetting" in high.reason
    assert "low" in advice.learning_rate(plan_stub(train={"learning_rate": 1e-6}), []).message
    assert advice.learning_rate(plan_stub(adapter={"type": "full"}, train={"learning_rate": 5e-5}), []) is None
    assert advice.learning_rate(plan_stub(adapter={"type": "full"}, train={"learning_rate": 2e-4}), []) is not None
    assert advice.learning_rate(plan_stub(method="dpo", train={"learning_rate": 2e-4}), []) is not None
    assert advice.learning_rate(plan_stub(method="dpo", train={"learning_rate": 1e-5}), []) is None


def test_rule_epochs():
    assert "3" in advice.epochs(plan_stub(train={"epochs": 5}), []).message
    assert advice.epochs(plan_stub(train={"epochs": 2}), []) is None
    assert advice.epochs(plan_stub(train={"epochs": 5, "max_steps": 10}), []) is None


def test_rule_adapter_choice():
    full = plan_stub(adapter={"type": "full"})
    assert "lora" in advice.adapter_choice(full, [row_stub(fits=False, status="fits with QLoRA")]).message
    lora = plan_stub()
    assert "nf4" in advice.adapter_choice(lora, [row_stub(fits=False, status="fits with QLoRA")]).message
    assert advice.adapter_choice(lora, [row_stub(fits=True)]) is None
    qlora = plan_stub(model={"path": "m", "quantization": "nf4"})
    assert "quantization: none" in advice.adapter_choice(qlora, [row_stub(memory=80 * 2**30)]).message
    assert advice.adapter_choice(qlora, [row_stub(memory=2 * 2**30)]) is None  # tight: QLoRA is right


def test_rule_targets():
    attention_only = plan_stub(adapter={"target_modules": ["q_proj", "v_proj"]})
    assert "all-linear" in advice.targets(attention_only, []).message
    assert advice.targets(plan_stub(adapter={"target_modules": ["q_proj", "down_proj"]}), []) is None
    assert advice.targets(plan_stub(), []) is None


def test_rule_truncation():
    assert "longer than" in advice.truncation(plan_stub(examples=100, truncated=20), []).message
    assert advice.truncation(plan_stub(examples=100, truncated=2), []) is None


def test_rule_fragmentation():
    from ayar.plan.tokenizer import BENCH, Extension, TokenizerFit
    from ayar.tokenizer.report import Efficiency

    fine = Efficiency("t", 1, 10, 10, 10, 10, fertility=3.0, chars_per_token=1.0, split_3plus=0.6,
                      byte_fallback_rate=0.0)

    def fit(reduction=None, fragmenting=True):
        saving = None if reduction is None else Extension(100, 90, 10, 1000, round(1000 * (1 - reduction)))
        return TokenizerFit(fine, fragmenting, saving, "" if saving else "too little text")

    assert advice.fragmentation(plan_stub(), []) is None  # not measured (pre-flight)
    assert advice.fragmentation(plan_stub(tokenizer_fit=fit(0.5, fragmenting=False)), []) is None
    worth = advice.fragmentation(plan_stub(tokenizer_fit=fit(0.5)), [])
    assert "ayar tokenizer extend m --data" in worth.message and "about 50% (estimate)" in worth.message
    assert "90 sampled texts" in worth.reason and BENCH in worth.reason
    assert advice.fragmentation(plan_stub(tokenizer_fit=fit(0.1)), []) is None  # saves too little to pay
    quoted = advice.fragmentation(plan_stub(tokenizer_fit=fit(None)), [])
    assert "not estimated here (too little text)" in quoted.message and BENCH in quoted.reason


def test_every_rule_has_a_test():
    tested = {name.removeprefix("test_rule_") for name in globals() if name.startswith("test_rule_")}
    assert tested == set(advice.RULES)
