"""prepare with synthetic and human sources: provenance kept, a target share reached, reported in the data card."""

from __future__ import annotations

import json

from synth_fake import write_jsonl

from ayar.data.mix import mix_out
from ayar.data.prepare import prepare
from ayar.data.prepare_config import PrepareSection

WORDS = ["kargo", "fatura", "iade", "kampanya", "adres", "ödeme", "stok", "beden", "renk", "garanti", "kupon",
         "teslimat", "şube", "uygulama", "hesap", "şifre", "puan", "indirim", "sepet", "favori"]


def conversation(i: int, kind: str) -> dict:
    a, b, c = WORDS[i % 20], WORDS[(i * 7 + 3) % 20], WORDS[(i * 11 + 5) % 20]
    return {"messages": [{"role": "user", "content": f"{kind} soru {i}: {a} ile {b} hakkında bilgi {i * 13}?"},
                         {"role": "assistant", "content": f"{kind} yanıt {i}: {c} için {i * 17} numaralı adım."}]}


def test_mix_out_by_hand():
    synthetic = [True] * 10 + [False] * 2
    out = mix_out(range(12), synthetic, 0.7, seed=0)  # 2 human -> round(0.7 * 2 / 0.3) = 5 synthetic kept
    assert len(out) == 5 and all(synthetic[i] for i in out)
    out = mix_out(range(12), synthetic, 0.9, seed=0)  # 10/12 = 0.83 < 0.9: round(10 * 0.1 / 0.9) = 1 human kept
    assert out in ({10}, {11})
    assert mix_out(range(12), synthetic, None, seed=0) == set()
    assert mix_out(range(12), synthetic, 1.0, seed=0) == {10, 11}
    assert mix_out(range(12), synthetic, 0.0, seed=0) == set(range(10))
    assert mix_out(range(12), synthetic, 0.7, seed=3) == mix_out(range(12), synthetic, 0.7, seed=3)  # seeded


def test_prepare_mixes_to_the_target_and_keeps_provenance(tmp_path):
    origin = {"teacher": "gpt-4o-mini", "endpoint": "https://api.openai.com", "task": "answer",
              "prompt_sha256": "ab" * 32, "answered_at": "2026-01-01T00:00:00Z"}
    write_jsonl(tmp_path / "synthetic.jsonl", [{**conversation(i, "sentetik"), "meta": {"synthetic": origin}}
                                               for i in range(100)])
    write_jsonl(tmp_path / "human.jsonl", [conversation(i, "insan") for i in range(30)])
    section = PrepareSection.model_validate({
        "sources": [{"path": "synthetic.jsonl"}, {"path": "human.jsonl"}], "pii": None,
        "synthetic_share": 0.7, "output_dir": "prepared", "split": {"train": 0.8, "val": 0.1, "test": 0.1}})
    summary = prepare(section, tmp_path, show_progress=False)
    mix = summary["mix"]
    assert mix["before"] == {"synthetic": 100, "human": 30}
    assert mix["left_out"] == {"synthetic": 30, "human": 0}  # 30 human -> 70 synthetic kept: 70%
    kept = {k: sum(c[k] for c in mix["by_split"].values()) for k in ("synthetic", "human")}
    assert kept == {"synthetic": 70, "human": 30}
    assert summary["rejects"]["by_reason"]["mixed_out"] == 30
    train = [json.loads(x) for x in (tmp_path / "prepared" / "train.jsonl").read_text().splitlines()]
    synthetic = [r for r in train if "synthetic" in r["meta"]]
    assert synthetic and all(r["meta"]["synthetic"] == origin for r in synthetic)
    assert all(r["meta"]["source"] == "synthetic.jsonl" for r in synthetic)
    card = (tmp_path / "prepared" / "data_card.md").read_text()
    assert "## Synthetic and human data" in card and "Target synthetic share: **70%**" in card
    assert "| train |" in card


def test_prepare_reports_shares_without_a_target(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{**conversation(i, "sentetik"), "meta": {"synthetic": {"teacher": "t"}}}
                                       for i in range(5)] + [conversation(i, "insan") for i in range(5)])
    section = PrepareSection.model_validate({"sources": [{"path": "a.jsonl"}], "pii": None, "output_dir": "p"})
    mix = prepare(section, tmp_path, show_progress=False)["mix"]
    assert mix["target_synthetic_share"] is None and mix["left_out"] == {"synthetic": 0, "human": 0}
    assert mix["before"] == {"synthetic": 5, "human": 5}


def test_lineage_runs_from_a_prepared_dataset_back_through_synth(tmp_path, monkeypatch):
    from synth_fake import FakeTeacher, teacher, user_text

    from ayar.govern.ledger import Ledger
    from ayar.govern.lineage import lineage
    from ayar.synth.config import SynthSection
    from ayar.synth.run import synthesize

    monkeypatch.setenv("AYAR_LEDGER", str(tmp_path / "ledger.jsonl"))
    write_jsonl(tmp_path / "questions.jsonl", [{"prompt": f"soru {i}: {WORDS[i]} nasıl?"} for i in range(6)])
    fake = FakeTeacher(lambda body: (200, f"{user_text(body)} sorusunun yanıtı: {WORDS[len(user_text(body)) % 20]}."))
    try:
        synthesize(SynthSection.model_validate({"teacher": teacher(fake), "task": "answer", "input": "questions.jsonl",
                                                "output_dir": "synth", "privacy": {"redact_outputs": False}}),
                   tmp_path, show_progress=False)
    finally:
        fake.close()
    prepare(PrepareSection.model_validate({"sources": [{"path": "synth/synthetic.jsonl"}], "pii": None,
                                           "output_dir": "prepared"}), tmp_path, show_progress=False)
    found = lineage(Ledger(tmp_path / "ledger.jsonl").entries(), str(tmp_path / "prepared" / "train.jsonl"))
    assert [s["label"] for s in found["sources"]] == ["input:questions.jsonl"]
    assert any(u["event"] == "synth" and "6 answer records from teacher fake-teacher" in u["what"]
               for u in found["upstream"])
