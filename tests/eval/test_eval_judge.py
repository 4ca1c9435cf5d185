"""The judge and endpoint targets, through the official openai client, against a real HTTP server on localhost."""

from __future__ import annotations

import json

import pytest
import yaml

from ayar.errors import AyarError
from ayar.eval.config import EndpointConfig, EvalSection, JudgeConfig
from ayar.eval.endpoint import ChatEndpoint, EndpointError, cache_key, generate_with_endpoint
from ayar.eval.judge import combine, parse_verdict, run_judge
from fake_openai import FakeOpenAI


@pytest.fixture
def fake():
    server = FakeOpenAI(lambda body: (200, "VERDICT: TIE"))
    yield server
    server.close()


def answers(body: dict) -> tuple[str, str]:
    """The (A, B) answers shown in a judge prompt rendered from the bundled rubric."""
    text = body["messages"][0]["content"]
    a = text.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
    b = text.split("[Answer B]\n")[1].split("\n\nGive your reasons")[0]
    return a, b


def prefers_good(body: dict) -> tuple[int, str]:
    """A sensible judge: picks the answer that contains "iyi"."""
    a, _ = answers(body)
    return 200, f"A ve B karşılaştırıldı.\nVERDICT: {'A' if 'iyi' in a else 'B'}"


def judge_config(fake, **kw) -> JudgeConfig:
    settings = {"base_url": fake.url, "model": "fake-judge", "api_key_env": None, "retry_delay": 0.01,
                "concurrency": 2}
    return JudgeConfig(**{**settings, **kw})


IDS = ["e1", "e2", "e3"]
PROMPTS = [[{"role": "user", "content": f"Soru {i}?"}] for i in range(3)]
REFS = [f"doğru cevap {i}" for i in range(3)]
BASE = [f"kötü cevap {i}" for i in range(3)]
TUNED = [f"iyi cevap {i}" for i in range(3)]


# ----------------------------------------------------------------------------- verdicts


def test_verdict_parsing():
    assert parse_verdict("Gerekçe...\nVERDICT: b") == "B"
    assert parse_verdict("**VERDICT:** TIE") == "TIE"
    assert parse_verdict("VERDICT: A\nthinking again\nVERDICT: B\n") == "B"  # the last one counts
    assert parse_verdict("I prefer A.") is None
    assert parse_verdict("The VERDICT: A is hidden mid-line") is None


def test_combining_both_orders():
    # base_first: A is base, B is tuned; tuned_first: A is tuned, B is base.
    table = {("B", "A"): "win", ("B", "TIE"): "win", ("TIE", "A"): "win",
             ("A", "B"): "loss", ("A", "TIE"): "loss", ("TIE", "B"): "loss",
             ("TIE", "TIE"): "tie", ("A", "A"): "tie", ("B", "B"): "tie"}
    for (first, second), outcome in table.items():
        assert combine(first, second) == outcome, (first, second)


# ----------------------------------------------------------------------------- the judge over HTTP


def test_each_pair_is_judged_in_both_orders(fake):
    fake.reply = prefers_good
    summary, pairs = run_judge(judge_config(fake), IDS, PROMPTS, REFS, BASE, TUNED, resamples=200)
    assert len(fake.requests) == 6
    shown = sorted(answers(body) for body in fake.requests)
    expected = sorted([(b, t) for b, t in zip(BASE, TUNED, strict=True)] +
                      [(t, b) for b, t in zip(BASE, TUNED, strict=True)])
    assert shown == expected  # every pair once with the base answer first, once with the tuned answer first
    assert all("doğru cevap" in body["messages"][0]["content"] for body in fake.requests)
    assert fake.requests[0]["model"] == "fake-judge" and fake.requests[0]["temperature"] == 0.0
    assert summary["win"] == 3 and summary["tie"] == 0 and summary["loss"] == 0 and summary["win_rate"] == 1.0
    assert summary["ci95"]["win"] == [1.0, 1.0] and summary["ci95"]["loss"] == [0.0, 0.0]
    assert summary["position_consistency"] == 1.0
    assert summary["failures"] == 0 and summary["unparsable"] == 0 and summary["n_pairs"] == 3
    assert [(p.base_first, p.tuned_first, p.outcome) for p in pairs] == [("B", "A", "win")] * 3


def test_a_judge_that_always_prefers_the_first_answer_gives_only_ties(fake):
    fake.reply = lambda body: (200, "İlk cevap daha iyi.\nVERDICT: A")
    summary, _ = run_judge(judge_config(fake), IDS, PROMPTS, REFS, BASE, TUNED, resamples=200)
    assert (summary["win"], summary["tie"], summary["loss"]) == (0, 3, 0)
    assert summary["tie_rate"] == 1.0 and summary["position_consistency"] == 0.0


def test_a_server_error_is_retried_then_succeeds(fake):
    calls = []

    def flaky(body):
        calls.append(1)
        return (500, "temporarily broken") if len(calls) == 1 else prefers_good(body)

    fake.reply = flaky
    summary, _ = run_judge(judge_config(fake, concurrency=1), IDS, PROMPTS, REFS, BASE, TUNED, resamples=200)
    assert len(fake.requests) == 7  # 6 judgements + 1 retry
    assert summary["failures"] == 0 and summary["win"] == 3


def test_rate_limits_and_timeouts_are_retried(fake):
    import time

    calls = []

    def busy(body):
        calls.append(1)
        if len(calls) == 1:
            return 429, "slow down"
        if len(calls) == 2:
            time.sleep(0.6)  # longer than the client's timeout
        return 200, "VERDICT: A"

    fake.reply = busy
    config = EndpointConfig(base_url=fake.url, model="m", api_key_env=None, retry_delay=0.01, timeout=0.3)
    assert ChatEndpoint(config).complete([{"role": "user", "content": "x"}]) == "VERDICT: A"
    assert len(fake.requests) == 3  # 429, timed out, answered


def test_failures_and_unparsable_verdicts_are_counted_not_dropped(fake):
    def picky(body):
        a, b = answers(body)
        if "cevap 0" in a:
            return 503, "overloaded"
        if "cevap 1" in a:
            return 200, "Karar veremiyorum."
        return prefers_good(body)

    fake.reply = picky
    summary, pairs = run_judge(judge_config(fake, max_retries=1), IDS, PROMPTS, REFS, BASE, TUNED, resamples=200)
    # Pair e1: both orders fail (2 attempts each); e2: no VERDICT line in either order; e3: decided.
    assert summary["failures"] == 2 and summary["unparsable"] == 2
    assert summary["undecided"] == 2 and summary["win"] == 1 and summary["n_pairs"] == 3
    assert summary["win_rate"] == 1.0  # of the decided pairs
    assert len(fake.requests) == 4 + 2 + 2
    assert pairs[0].outcome is None and "HTTP 503 after 2 attempts" in pairs[0].problems[0]
    assert pairs[1].outcome is None and "no VERDICT line" in pairs[1].problems[0]


def test_a_client_error_is_not_retried(fake):
    fake.reply = lambda body: (400, "bad request")
    summary, _ = run_judge(judge_config(fake), IDS[:1], PROMPTS[:1], REFS[:1], BASE[:1], TUNED[:1], resamples=100)
    assert len(fake.requests) == 2 and summary["failures"] == 2


def test_cache_makes_a_rerun_free(fake, tmp_path):
    fake.reply = prefers_good
    cache = tmp_path / "judge_cache.jsonl"
    first, _ = run_judge(judge_config(fake), IDS, PROMPTS, REFS, BASE, TUNED, cache_path=cache, resamples=200)
    assert len(fake.requests) == 6 and len(cache.read_text().splitlines()) == 6
    second, _ = run_judge(judge_config(fake), IDS, PROMPTS, REFS, BASE, TUNED, cache_path=cache, resamples=200)
    assert len(fake.requests) == 6 and second == first
    # A different question is a different key: only its two requests are sent.
    run_judge(judge_config(fake), ["e9"], [[{"role": "user", "content": "Yeni?"}]], ["r"], ["kötü"], ["iyi"],
              cache_path=cache, resamples=100)
    assert len(fake.requests) == 8


def test_identical_answers_tie_without_a_request(fake):
    summary, pairs = run_judge(judge_config(fake), IDS[:1], PROMPTS[:1], REFS[:1], ["aynı"], [" aynı "],
                               resamples=100)
    assert fake.requests == [] and summary["tie"] == 1 and summary["identical"] == 1 and pairs[0].identical


def test_the_rubric_can_be_replaced(fake, tmp_path):
    (tmp_path / "rubric.txt").write_text("S: $question\nR: $reference\n1: $answer_a\n2: $answer_b\nVERDICT?",
                                         encoding="utf-8")
    fake.reply = lambda body: (200, "VERDICT: TIE")
    run_judge(judge_config(fake, rubric=str(tmp_path / "rubric.txt"), include_reference=False), IDS[:1],
              PROMPTS[:1], REFS[:1], BASE[:1], TUNED[:1], resamples=100)
    sent = sorted(body["messages"][0]["content"] for body in fake.requests)
    assert sent == ["S: Soru 0?\nR: (none given)\n1: iyi cevap 0\n2: kötü cevap 0\nVERDICT?",
                    "S: Soru 0?\nR: (none given)\n1: kötü cevap 0\n2: iyi cevap 0\nVERDICT?"]
    (tmp_path / "bad.txt").write_text("no placeholders", encoding="utf-8")
    with pytest.raises(AyarError, match=r"lacks \$question"):
        run_judge(judge_config(fake, rubric=str(tmp_path / "bad.txt")), IDS, PROMPTS, REFS, BASE, TUNED)


# ----------------------------------------------------------------------------- endpoint targets


def test_endpoint_generation_sends_the_key_and_decoding_settings(fake, monkeypatch):
    fake.reply = lambda body: (200, f"  yanıt: {body['messages'][-1]['content']}  ")
    config = EndpointConfig(base_url=fake.url, model="hosted", api_key_env="AYAR_TEST_KEY", retry_delay=0.01)
    with pytest.raises(AyarError, match="AYAR_TEST_KEY"):
        ChatEndpoint(config)
    monkeypatch.setenv("AYAR_TEST_KEY", "sk-test")
    replies = generate_with_endpoint(ChatEndpoint(config), PROMPTS, max_new_tokens=7, temperature=0.5, top_p=0.9,
                                     seed=3)
    assert replies == ["yanıt: Soru 0?", "yanıt: Soru 1?", "yanıt: Soru 2?"]
    assert {h["authorization"] for h in fake.headers} == {"Bearer sk-test"}
    body = fake.requests[0]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (7, 0.5, 0.9, 3)
    fake.reply = lambda body: (500, "down")
    with pytest.raises(EndpointError, match="3 of 3 requests failed"):
        generate_with_endpoint(ChatEndpoint(config.model_copy(update={"max_retries": 0})), [
            [{"role": "user", "content": f"başka {i}"}] for i in range(3)], max_new_tokens=7, temperature=0,
            top_p=1, seed=0)


def test_cache_key_is_order_independent_for_params_and_sensitive_to_content():
    messages = [{"role": "user", "content": "a"}]
    key = cache_key("http://h/v1", "m", messages, {"a": 1, "b": 2})
    assert key == cache_key("http://h/v1/", "m", messages, {"b": 2, "a": 1})
    assert key != cache_key("http://h/v1", "m2", messages, {"a": 1, "b": 2})
    assert key != cache_key("http://other/v1", "m", messages, {"a": 1, "b": 2})
    assert key != cache_key("http://h/v1", "m", [{"role": "user", "content": "b"}], {"a": 1, "b": 2})
    assert key != cache_key("http://h/v1", "m", messages, {"a": 1, "b": 3})


@pytest.mark.slow
def test_evaluate_run_with_endpoint_targets_and_judge(fake, tmp_path):
    """A hosted baseline vs a served tuned model, judged: no local model is loaded."""
    from ayar.eval.compare import evaluate_run
    from helpers import colour_conversations, write_jsonl

    test = colour_conversations(6, seed=5)
    write_jsonl(tmp_path / "train.jsonl", colour_conversations(10, seed=0))
    write_jsonl(tmp_path / "test.jsonl", test)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({"model": {"path": "some/base"},
                                                     "data": {"train": str(tmp_path / "train.jsonl")}}))

    def serve(body):
        if body["model"] == "fake-judge":  # prefers the answer that names the item
            return 200, f"VERDICT: {'B' if '?' in answers(body)[0] else 'A'}"
        user = body["messages"][-1]["content"]  # "Ürün: <renk> renkli güzel bir <tür>"
        colour, item = user.split()[1], user.split()[-1]
        reply = {"renk": colour, "tür": item if body["model"] == "tuned" else "?"}
        return 200, json.dumps(reply, ensure_ascii=False)

    fake.reply = serve
    endpoint = {"base_url": fake.url, "api_key_env": None, "retry_delay": 0.01}
    section = EvalSection(metrics=["exact_match", "json", "perplexity"], baseline={**endpoint, "model": "base"},
                          tuned={**endpoint, "model": "tuned"}, judge={**endpoint, "model": "fake-judge"},
                          few_shot=2, bootstrap=200)
    result = evaluate_run(run, section)
    comparison = json.loads((run / "eval/comparison.json").read_text())
    assert comparison == result["comparison"]
    assert comparison["models"] == {"base": f"base at {fake.url} + 2-shot", "tuned": f"tuned at {fake.url}"}
    rows = {r["name"]: r for r in comparison["metrics"]}
    assert rows["perplexity"]["base"] is None and rows["perplexity"]["ci95"] is None  # endpoints give no likelihood
    # Tuned replies are the references; base replies have the right colour and "?" for the item.
    assert rows["exact_match"]["base"] == 0.0 and rows["exact_match"]["tuned"] == 1.0
    assert rows["exact_match"]["diff"] == 1.0 and rows["exact_match"]["ci95"] == [1.0, 1.0]
    assert rows["field_accuracy[renk]"]["diff"] == 0.0 and rows["field_accuracy[tür]"]["diff"] == 1.0
    examples = [json.loads(line) for line in (run / "eval/examples.jsonl").read_text().splitlines()]
    lenient = {"base": {"json_parse_rate_lenient": 1.0, "field_accuracy_lenient[renk]": 1.0,
                        "field_accuracy_lenient[tür]": 0.0},
               "tuned": {"json_parse_rate_lenient": 1.0, "field_accuracy_lenient[renk]": 1.0,
                         "field_accuracy_lenient[tür]": 1.0}}
    assert examples[0]["scores"] == {"base": {"exact_match": 0.0, "json_parse_rate": 1.0, "field_accuracy[renk]": 1.0,
                                              "field_accuracy[tür]": 0.0, **lenient["base"]},
                                     "tuned": {"exact_match": 1.0, "json_parse_rate": 1.0, "field_accuracy[renk]": 1.0,
                                               "field_accuracy[tür]": 1.0, **lenient["tuned"]}}
    assert examples[0]["id"] == "test.jsonl:1" and examples[0]["reference"] == test[0]["messages"][-1]["content"]
    base_prompts = [b for b in fake.requests if b["model"] == "base"]
    assert len(base_prompts) == 6 and len(base_prompts[0]["messages"]) == 1 + 2 * 2 + 1  # system, 2 shots, user
    tuned_prompts = [b for b in fake.requests if b["model"] == "tuned"]
    assert [m["role"] for m in tuned_prompts[0]["messages"]] == ["system", "user"]
    judged = json.loads((run / "eval/judge.json").read_text())
    assert judged == result["judge"] and judged["win"] == 6 and judged["judge_model"] == "fake-judge"
    assert len((run / "eval/judge_pairs.jsonl").read_text().splitlines()) == 6
    # Running again is answered from the cache: the server sees nothing new.
    seen = len(fake.requests)
    evaluate_run(run, section)
    assert len(fake.requests) == seen
