"""The teacher client of `ayar synth`: request cache, resume, retries with backoff, rate limits, cost."""

from __future__ import annotations

import json

import pytest
from synth_fake import PROMPTS, FakeTeacher, teacher, user_text, write_jsonl

from ayar.errors import AyarError
from ayar.synth.config import SynthSection
from ayar.synth.cost import account, price_of
from ayar.synth.limiter import RateLimiter
from ayar.synth.run import Clock, synthesize


@pytest.fixture
def fake():
    server = FakeTeacher(lambda body: (200, f"Yanıt: {user_text(body)} için kargo bilgisi gönderildi."))
    yield server
    server.close()


class FakeClock:
    """Time that only moves when someone sleeps; every sleep is recorded."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def section(tmp_path, fake, **kw) -> SynthSection:
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    settings = {"teacher": teacher(fake), "task": "answer", "input": "prompts.jsonl", "output_dir": "out",
                "privacy": {"redact_outputs": False}}
    for key, value in kw.items():
        settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else value
    return SynthSection.model_validate(settings)


def test_rerun_is_served_from_the_cache(tmp_path, fake):
    first = synthesize(section(tmp_path, fake), tmp_path, clock=Clock(sleep=FakeClock().sleep), show_progress=False)
    assert len(fake.requests) == 6
    assert first["requests"] == {"jobs": 6, "cached": 0, "answered_now": 6, "http_attempts": 6,
                                 "rate_limit_wait_seconds": 0.0}
    out = (tmp_path / "out" / "synthetic.jsonl").read_text(encoding="utf-8")

    second = synthesize(section(tmp_path, fake), tmp_path, show_progress=False)
    assert len(fake.requests) == 6  # zero new requests
    assert second["requests"]["cached"] == 6 and second["requests"]["http_attempts"] == 0
    assert second["usage_this_run"]["total_tokens"] == 0
    assert second["usage"] == first["usage"]  # the tokens the data cost, remembered with the replies
    assert (tmp_path / "out" / "synthetic.jsonl").read_text(encoding="utf-8") == out  # same records, same times


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, fake):
    reply = fake.reply
    fake.reply = lambda body: (200, reply(body)[1]) if len(fake.requests) <= 4 else (400, "bad request")
    with pytest.raises(AyarError) as err:
        synthesize(section(tmp_path, fake), tmp_path, show_progress=False)
    assert "2 of 6 teacher requests failed" in str(err.value) and "run the command again to resume" in str(err.value)
    assert not (tmp_path / "out" / "synthetic.jsonl").exists()  # nothing half-written

    fake.reply = reply
    sent_before = len(fake.requests)
    summary = synthesize(section(tmp_path, fake), tmp_path, show_progress=False)
    assert len(fake.requests) - sent_before == 2  # only the two unanswered prompts
    assert summary["requests"]["cached"] == 4 and summary["records"] == 6


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_back_off_on_429_and_5xx(tmp_path, fake, status):
    calls = {"n": 0}

    def flaky(body):
        calls["n"] += 1
        return (status, "busy") if calls["n"] <= 2 else (200, f"Yanıt {calls['n']}: teşekkür ederiz.")

    fake.reply = flaky
    clock = FakeClock()
    s = section(tmp_path, fake, limit=1, teacher={"max_retries": 3, "retry_delay": 0.5})
    summary = synthesize(s, tmp_path, clock=Clock(clock.monotonic, clock.sleep), show_progress=False)
    assert summary["records"] == 1 and summary["requests"]["http_attempts"] == 3
    assert clock.sleeps == [0.5, 1.0]  # retry_delay * 2**attempt


def test_errors_that_retrying_cannot_fix_fail_at_once(tmp_path, fake):
    fake.reply = lambda body: (401, "wrong key")
    clock = FakeClock()
    with pytest.raises(AyarError, match="HTTP 401"):
        synthesize(section(tmp_path, fake, limit=1), tmp_path, clock=Clock(clock.monotonic, clock.sleep),
                   show_progress=False)
    assert len(fake.requests) == 1 and clock.sleeps == []


def test_retries_give_up_after_max_retries(tmp_path, fake):
    fake.reply = lambda body: (500, "down")
    clock = FakeClock()
    s = section(tmp_path, fake, limit=1, teacher={"max_retries": 2, "retry_delay": 1.0})
    with pytest.raises(AyarError, match="after 3 attempts"):
        synthesize(s, tmp_path, clock=Clock(clock.monotonic, clock.sleep), show_progress=False)
    assert len(fake.requests) == 3 and clock.sleeps == [1.0, 2.0]


def _max_in_window(times: list[float], weights: list[int], window: float = 60.0) -> int:
    return max(sum(w for t, w in zip(times, weights, strict=True) if start <= t < start + window) for start in times)


def test_rate_limiter_requests_per_minute():
    clock = FakeClock()
    limiter = RateLimiter(3, None, clock=clock.monotonic, sleep=clock.sleep)
    starts = []
    for _ in range(10):
        limiter.acquire(1)
        starts.append(clock.now)
    assert _max_in_window(starts, [1] * 10) == 3
    assert starts == [0, 0, 0, 60, 60, 60, 120, 120, 120, 180]  # waits exactly until a slot frees


def test_rate_limiter_tokens_per_minute_counts_what_was_used():
    clock = FakeClock()
    limiter = RateLimiter(None, 100, clock=clock.monotonic, sleep=clock.sleep)
    grant = limiter.acquire(90)  # estimated 90 ...
    limiter.settle(grant, 30)  # ... used 30
    limiter.acquire(60)  # 30 + 60 <= 100: no wait
    assert clock.now == 0
    limiter.acquire(20)  # 30 + 60 + 20 > 100: waits for the first to leave the window
    assert clock.now == 60
    big = limiter.acquire(500)  # larger than the budget: goes alone once the window is empty
    assert big[1] == 500 and clock.now == 120


def test_rate_limit_is_respected_by_a_run(tmp_path, fake):
    clock = FakeClock()
    stamps = []
    reply = fake.reply

    def stamped(body):
        stamps.append(clock.now)
        return reply(body)

    fake.reply = stamped
    s = section(tmp_path, fake, teacher={"requests_per_minute": 2, "concurrency": 1})
    summary = synthesize(s, tmp_path, clock=Clock(clock.monotonic, clock.sleep), show_progress=False)
    assert summary["records"] == 6
    assert _max_in_window(stamps, [1] * len(stamps)) == 2
    assert stamps == [0, 0, 60, 60, 120, 120]
    assert summary["requests"]["rate_limit_wait_seconds"] == 120.0


def test_tokens_and_cost_from_the_price_table(tmp_path, fake):
    s = section(tmp_path, fake, teacher={"model": "gpt-4o-mini-2024-07-18"})
    summary = synthesize(s, tmp_path, show_progress=False)
    usage = summary["usage"]
    sent = [(sum(len(m["content"]) for m in b["messages"]) // 4, None) for b in fake.requests]
    assert usage["requests"] == 6 and usage["prompt_tokens"] == sum(p for p, _ in sent)
    assert usage["price"]["source"] == "table: gpt-4o-mini"
    expected = (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6
    assert usage["estimated_cost"] == pytest.approx(expected)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["usage"] == usage


def test_price_lookup_and_recipe_override():
    from ayar.eval.endpoint import Completion
    from ayar.synth.config import PriceConfig

    assert price_of("some-local-model", None) == (None, "none")
    assert price_of("openai/gpt-4o", None)[1] == "table: gpt-4o"
    own = PriceConfig(input_per_million=1.0, output_per_million=2.0, currency="TRY")
    done = [Completion("a", {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}, False),
            Completion("b", None, True)]
    result = account(done, "x", own)
    assert result["estimated_cost"] == pytest.approx((1000 * 1 + 500 * 2) / 1e6)
    assert result["without_usage"] == 1 and result["currency"] == "TRY"
