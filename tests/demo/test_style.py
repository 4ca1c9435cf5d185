"""The demo's style stage: its data files and recipes."""

from __future__ import annotations

import json

import pytest

from ayar.demo import style
from ayar.demo.profiles import PROFILES
from ayar.demo.support import formality
from ayar.recipe import validate_recipe


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_style_data_mixes_registers_for_sft_and_keeps_pairs_apart(tmp_path):
    splits = style.style_data(tmp_path, seed=0, n_train=200, n_test=40)
    pairs_train = _lines(tmp_path / "data" / "support_pairs_train.jsonl")
    pairs_test = _lines(tmp_path / "data" / "support_pairs_test.jsonl")
    sft = _lines(tmp_path / "data" / "support_sft.jsonl")
    assert (len(pairs_train), len(pairs_test), len(sft)) == (200, 40, 200)
    assert pairs_train == splits["train"]
    assert not {p["prompt"] for p in pairs_train} & {p["prompt"] for p in pairs_test}
    registers = [formality(r["messages"][-1]["content"]) for r in sft]
    formal = registers.count("formal") / len(registers)
    assert 0.4 < formal < 0.6 and registers.count("informal") / len(registers) > 0.4  # a mix, about half each
    assert [r["messages"][0]["content"] for r in sft] == [p["prompt"] for p in pairs_train]


@pytest.mark.parametrize("base", sorted(PROFILES))
def test_style_recipes_validate_and_chain_dpo_after_sft(base):
    profile = PROFILES[base]
    sft = validate_recipe(style.sft_recipe("../models/base", profile))
    dpo = validate_recipe(style.dpo_recipe("../models/base", profile))
    orpo = validate_recipe(style.orpo_recipe("../models/base", profile))
    assert sft.model.path == dpo.model.path == orpo.model.path == "../models/base"
    assert sft.adapter.type == "lora" and dpo.train.learning_rate < sft.train.learning_rate
    assert sft.method == "sft" and orpo.method == "orpo" and orpo.model.init_adapter is None
    assert dpo.method == "dpo" and dpo.model.init_adapter == "../runs/support-sft"
    assert dpo.preference.reference == "precompute" and dpo.data.val is not None
