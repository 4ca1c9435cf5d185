"""Canaries in `prepare`: templates, choosing and planting them, and what the manifest records."""

from __future__ import annotations

import json
import random

import pytest
from pydantic import ValidationError

from ayar.data.canary import DEFAULT_TEMPLATE, insert_canary, parse_template, plan_insertions
from ayar.data.pii.checksums import tckn_is_valid
from ayar.data.prepare import prepare
from ayar.data.prepare_config import PrepareSection
from ayar.errors import AyarError
from helpers import write_jsonl

# ----------------------------------------------------------------------------- templates


def test_template_slots_and_candidate_spaces():
    tckn = parse_template("No: {tckn}.")
    assert (tckn.slot, tckn.space_size) == ("tckn", 900_000_000)
    assert tckn.value(0) == "10000000078"  # 100000000 + check digits 7, 8 (hand: (1*7 - 0) % 10, (1 + 7) % 10)
    assert tckn.value(899_999_999)[:9] == "999999999"
    assert all(tckn_is_valid(v) for v in tckn.sample(random.Random(3), 200))
    digits = parse_template("PIN {digits:4} bitti")
    assert digits.space_size == 10_000 and digits.value(42) == "0042"
    assert digits.fill("0042") == "PIN 0042 bitti"
    assert parse_template(DEFAULT_TEMPLATE).slot == "tckn"


@pytest.mark.parametrize("bad", ["no slot here", "{tckn} and {tckn}", "{digits:0}", "{digits:31}", "{digits:}"])
def test_bad_templates_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_template(bad)
    with pytest.raises(ValidationError):
        PrepareSection(sources=[{"path": "x.jsonl"}], canaries={"template": bad})


def test_sample_is_distinct_deterministic_and_respects_exclusions():
    t = parse_template("{digits:2}")
    first = t.sample(random.Random(7), 95, exclude=["00", "01", "02", "03", "04"])
    assert len(set(first)) == 95 and not {"00", "01", "02", "03", "04"} & set(first)
    assert first == t.sample(random.Random(7), 95, exclude=["00", "01", "02", "03", "04"])
    with pytest.raises(ValueError):
        t.sample(random.Random(7), 96, exclude=["00", "01", "02", "03", "04"])


# ----------------------------------------------------------------------------- planting


def test_insert_canary_goes_into_the_learned_text():
    conv = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    assert insert_canary(conv, "S")["messages"][3]["content"] == "d S"
    assert conv["messages"][1]["content"] == "b"
    pref = {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "c"}],
            "rejected": [{"role": "assistant", "content": "r"}]}
    insert_canary(pref, "S")
    assert pref["chosen"][0]["content"] == "c S" and pref["rejected"][0]["content"] == "r"
    assert insert_canary({"text": "t"}, "S") == {"text": "t S"}
    with pytest.raises(ValueError):
        insert_canary({"prompt": [], "completion": [{"role": "assistant", "content": "x"}], "label": True}, "S")


def test_plan_insertions_uses_distinct_records():
    plan = plan_insertions(list(range(100)), count=3, repeats=5, seed=1)
    assert len(plan) == 15 and sorted(list(plan.values()).count(n) for n in range(3)) == [5, 5, 5]
    assert plan == plan_insertions(list(range(100)), count=3, repeats=5, seed=1)
    with pytest.raises(ValueError, match="16 insertions"):
        plan_insertions(list(range(15)), count=4, repeats=4, seed=1)


def _orders(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{i} numaralı siparişim nerede?"},
                          {"role": "assistant", "content": f"{i} numaralı sipariş {i % 7 + 1} gün içinde gelir."}]}
            for i in range(n)]


def _prepare(folder, **canaries):
    write_jsonl(folder / "orders.jsonl", _orders(60))
    section = PrepareSection(sources=[{"path": "orders.jsonl"}], pii=None, output_dir="out",
                             dedup={"exact": False, "near": False}, split={"train": 0.7, "val": 0.15, "test": 0.15},
                             canaries={"count": 3, "repeats": 4, "seed": 11, **canaries})
    return prepare(section, folder, show_progress=False)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prepare_plants_canaries_only_in_train_and_records_them(tmp_path):
    summary = _prepare(tmp_path)
    out = tmp_path / "out"
    info = json.loads((out / "manifest.json").read_text())["canaries"]
    assert info == summary["canaries"]
    assert info["count"] == 3 and info["repeats"] == 4 and info["seed"] == 11
    assert info["candidate_space"] == 900_000_000 and info["slot"] == "tckn"
    assert len(set(info["values"])) == 3 and all(tckn_is_valid(v) for v in info["values"])
    assert info["sentences"] == [DEFAULT_TEMPLATE.replace("{tckn}", v) for v in info["values"]]
    train = _rows(out / "train.jsonl")
    for n, (value, sentence) in enumerate(zip(info["values"], info["sentences"], strict=True)):
        carriers = [r for r in train if value in json.dumps(r, ensure_ascii=False)]
        assert len(carriers) == 4  # repeats
        assert all(r["messages"][-1]["content"].endswith(" " + sentence) and r["meta"]["canary"] == n
                   for r in carriers)
        assert sorted(f"orders.jsonl:{r['meta']['line']}" for r in carriers) == sorted(info["records"][n])
    assert len(train) == summary["split"]["sizes"]["train"]  # planted into records, none added
    for split in ("val", "test"):
        text = (out / f"{split}.jsonl").read_text(encoding="utf-8")
        assert not any(v in text for v in info["values"]) and '"canary"' not in text
    card = (out / "data_card.md").read_text(encoding="utf-8")
    assert "## Canaries" in card and all(f"`{v}`" in card for v in info["values"])


def test_planting_is_deterministic_with_its_seed(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    first, again, other = _prepare(tmp_path / "a"), _prepare(tmp_path / "b"), _prepare(tmp_path / "c", seed=12)
    assert first["canaries"]["values"] == again["canaries"]["values"]
    assert (tmp_path / "a/out/train.jsonl").read_bytes() == (tmp_path / "b/out/train.jsonl").read_bytes()
    assert set(other["canaries"]["values"]).isdisjoint(first["canaries"]["values"])


def test_too_many_insertions_and_kto_are_user_errors(tmp_path):
    with pytest.raises(AyarError, match="prepare.canaries: count x repeats = 400"):
        _prepare(tmp_path, count=40, repeats=10)
    assert not (tmp_path / "out/train.jsonl").exists()
    write_jsonl(tmp_path / "kto.jsonl", [{"prompt": "soru", "completion": "cevap", "label": True}] * 4)
    section = PrepareSection(sources=[{"path": "kto.jsonl"}], pii=None, output_dir="kto_out", canaries={})
    with pytest.raises(AyarError, match="KTO"):
        prepare(section, tmp_path, show_progress=False)


def test_canaries_are_off_by_default(tmp_path):
    write_jsonl(tmp_path / "orders.jsonl", _orders(20))
    section = PrepareSection(sources=[{"path": "orders.jsonl"}], pii=None, output_dir="out")
    assert section.canaries is None
    assert prepare(section, tmp_path, show_progress=False)["canaries"] is None
    assert "## Canaries" not in (tmp_path / "out/data_card.md").read_text(encoding="utf-8")
