"""`ayar synth pairs`: best vs worst of k scored replies, the minimum-gap rule, and the scorers."""

from __future__ import annotations

import json

import pytest
from synth_fake import FakeTeacher, teacher, user_text, write_jsonl

from ayar.errors import AyarError
from ayar.synth.config import SynthSection
from ayar.synth.pairs import Selection, build_pairs, select_pair
from ayar.synth.score import parse_score
from ayar.synth.tasks import Rejected


def test_best_vs_worst_by_hand():
    replies = ["a", "b", "c", "d"]
    assert select_pair(replies, [3.0, 7.0, 1.0, 5.0], min_gap=2) == Selection(chosen=1, rejected=2, gap=6.0)
    # ties: the first reply with the best score, the first with the worst
    assert select_pair(replies, [7.0, 7.0, 2.0, 2.0], min_gap=1) == Selection(0, 2, 5.0)
    # unscored replies are ignored, and so are empty ones
    assert select_pair(replies, [None, 4.0, None, 6.0], min_gap=1) == Selection(3, 1, 2.0)
    assert select_pair(["", "b", "c"], [0.0, 5.0, 9.0], min_gap=1) == Selection(2, 1, 4.0)


def test_minimum_gap_rule_by_hand():
    replies = ["a", "b", "c"]
    assert select_pair(replies, [5.0, 6.0, 5.5], min_gap=1.0) == Selection(1, 0, 1.0)  # a gap of min_gap is kept
    below = select_pair(replies, [5.0, 6.0, 5.5], min_gap=1.5)
    assert isinstance(below, Rejected) and below.code == "gap_too_small"
    assert below.detail == "best - worst score = 1, below min_gap 1.5"
    assert select_pair(replies, [4.0, 4.0, 4.0], min_gap=0).code == "gap_too_small"  # no gap teaches nothing
    assert select_pair(replies, [None, 9.0, None], min_gap=0).code == "too_few_scored"
    assert select_pair(["same", "same "], [1.0, 9.0], min_gap=1).code == "identical_replies"


def test_parse_score():
    assert parse_score("İyi bir yanıt.\nSCORE: 8") == 8.0
    assert parse_score("SCORE: 3\nrevised\n**SCORE:** 7.5") == 7.5
    assert parse_score("SCORE: 11") is None and parse_score("no score") is None


@pytest.fixture
def fake():
    # reply j of each prompt (the request's seed) is "sen" for even j and "siz" for odd j
    server = FakeTeacher(lambda body: (200, f"{user_text(body)} için {'size yardımcı oluruz' if body['seed'] % 2 else 'sana bakarız'}"
                                            f" ({body['seed']})"))
    yield server
    server.close()


def pairs_section(fake, **pairs) -> SynthSection:
    return SynthSection.model_validate({"teacher": teacher(fake), "output_dir": "out",
                                        "privacy": {"redact_outputs": False},
                                        "pairs": {"prompts": "prompts.jsonl", "k": 4, **pairs}})


def read(tmp_path, name):
    return [json.loads(x) for x in (tmp_path / "out" / name).read_text(encoding="utf-8").splitlines()]


def test_pairs_from_the_teacher_with_a_regex_verifier(tmp_path, fake):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}, {"prompt": "İade"}])
    summary = build_pairs(pairs_section(fake, scorer="regex", regex=r"\bsize\b", min_gap=1), tmp_path)
    assert summary["pairs"] == 2 and summary["mean_gap"] == 1.0 and len(fake.requests) == 8
    pairs = read(tmp_path, "pairs.jsonl")
    assert pairs[0]["prompt"] == [{"role": "user", "content": "Kargo"}]
    assert pairs[0]["chosen"] == "Kargo için size yardımcı oluruz (1)"  # first odd seed: the first best
    assert pairs[0]["rejected"] == "Kargo için sana bakarız (0)"
    meta = pairs[0]["meta"]["synthetic"]
    assert meta["scores"] == {"chosen": 1.0, "rejected": 0.0, "all": [0.0, 1.0, 0.0, 1.0]} and meta["k"] == 4
    build_pairs(pairs_section(fake, scorer="regex", regex=r"\bsize\b", min_gap=1), tmp_path)
    assert len(fake.requests) == 8  # a re-run is served from the cache


def test_pairs_min_gap_skips_and_reasons(tmp_path, fake):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
    summary = build_pairs(pairs_section(fake, scorer="regex", regex=r"\bsize\b", min_gap=2), tmp_path)
    assert summary["pairs"] == 0 and summary["rejects"]["by_reason"] == {"gap_too_small": 1}
    assert read(tmp_path, "pairs_rejects.jsonl")[0]["where"] == "prompts.jsonl:1"


def test_pairs_with_a_python_reward_rule(tmp_path, fake):
    (tmp_path / "rewards.py").write_text("def formal(prompt, reply):\n    return reply.count('size') * 2.0 - "
                                         "reply.count('sana')\n")
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
    summary = build_pairs(pairs_section(fake, scorer="python", function="rewards.py:formal", min_gap=3), tmp_path)
    assert summary["pairs"] == 1 and summary["mean_gap"] == 3.0
    (tmp_path / "verify.py").write_text("def formal(prompt, reply):\n    return 'size' in reply\n")
    verified = build_pairs(pairs_section(fake, scorer="python", function="verify.py:formal", min_gap=1), tmp_path)
    assert verified["pairs"] == 1 and verified["mean_gap"] == 1.0  # a verifier's True / False scores 1 / 0
    (tmp_path / "broken.py").write_text("def formal(prompt, reply):\n    return 'yes'\n")
    with pytest.raises(AyarError, match="returned str 'yes'; it must return a finite number"):
        build_pairs(pairs_section(fake, scorer="python", function="broken.py:formal"), tmp_path)
    (tmp_path / "raises.py").write_text("def formal(prompt, reply):\n    return 1 / 0\n")
    with pytest.raises(AyarError, match="raised ZeroDivisionError on reply 1"):
        build_pairs(pairs_section(fake, scorer="python", function="raises.py:formal"), tmp_path)
    (tmp_path / "syntax.py").write_text("def formal(:\n")
    with pytest.raises(AyarError, match="syntax.py cannot be loaded: SyntaxError"):
        build_pairs(pairs_section(fake, scorer="python", function="syntax.py:formal"), tmp_path)
    bad = pairs_section(fake, scorer="python", function="rewards.py:missing")
    with pytest.raises(AyarError, match="defines no function missing"):
        build_pairs(bad, tmp_path)


def test_pairs_with_a_judge(tmp_path, fake):
    judge = FakeTeacher(lambda body: (200, "Kibar.\nSCORE: 9" if "size" in user_text(body) else "Samimi.\nSCORE: 4"))
    try:
        write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
        section = SynthSection.model_validate({
            "teacher": teacher(fake), "output_dir": "out", "privacy": {"redact_outputs": False},
            "quality": {"judge": {"base_url": judge.url, "model": "judge", "api_key_env": None}},
            "pairs": {"prompts": "prompts.jsonl", "k": 2, "scorer": "judge", "min_gap": 2}})
        summary = build_pairs(section, tmp_path)
    finally:
        judge.close()
    assert summary["pairs"] == 1 and summary["mean_gap"] == 5.0 and len(judge.requests) == 2
    assert "[Answer]" in judge.requests[0]["messages"][0]["content"]


def test_judge_scorer_needs_a_judge(tmp_path, fake):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
    with pytest.raises(AyarError, match="needs synth.quality.judge"):
        build_pairs(pairs_section(fake, scorer="judge"), tmp_path)


def test_pairs_are_read_by_prepare_as_preference_data(tmp_path, fake):
    from ayar.data.formats import convert, detect_format

    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
    build_pairs(pairs_section(fake, scorer="regex", regex="size"), tmp_path)
    raw = read(tmp_path, "pairs.jsonl")[0]
    record = convert(raw, detect_format(raw), "pairs.jsonl", 1)
    assert record.chosen.endswith("(1)") and record.rejected.endswith("(0)")


@pytest.mark.slow
def test_pairs_sampled_from_a_local_student(tmp_path, tiny_llama):
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "merhaba"}, {"prompt": "kargo"}])
    section = SynthSection.model_validate({
        "teacher": {"base_url": "http://127.0.0.1:9/v1", "model": "unused", "api_key_env": None},
        "output_dir": "out", "privacy": {"redact_outputs": False},
        "pairs": {"prompts": "prompts.jsonl", "sampler": str(tiny_llama), "k": 3, "max_tokens": 8,
                  "scorer": "python", "function": "len.py:score", "min_gap": 0}})
    (tmp_path / "len.py").write_text("def score(prompt, reply):\n    return float(len(reply))\n")
    summary = build_pairs(section, tmp_path)
    assert summary["prompts"] == 2 and summary["usage"] is None
    assert summary["pairs"] + summary["rejects"]["total"] == 2


def test_pairs_are_recorded_in_the_ledger(tmp_path, fake, monkeypatch):
    from ayar.govern.ledger import Ledger

    monkeypatch.setenv("AYAR_LEDGER", str(tmp_path / "ledger.jsonl"))
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Kargo"}])
    build_pairs(pairs_section(fake, scorer="regex", regex="size"), tmp_path)
    entry = [e for e in Ledger(tmp_path / "ledger.jsonl").entries() if e["event"] == "synth_pairs"][-1]
    assert set(entry["inputs"]) == {"prompts:prompts.jsonl"} and "pairs.jsonl" in entry["outputs"]
    assert entry["data"]["pairs"] == 1 and entry["data"]["scorer"] == "regex"
