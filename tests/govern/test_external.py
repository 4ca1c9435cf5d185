"""The external-call guard: a prompt holding a T.C. Kimlik No is never sent to a judge or endpoint on another
machine unless the run allows it; what is sent where is recorded as counts and hashes only."""

from __future__ import annotations

import pytest
import yaml

from ayar.errors import AyarError
from ayar.eval.config import EndpointConfig, JudgeConfig
from ayar.eval.endpoint import ChatEndpoint
from ayar.govern.external import guarded, is_local
from ayar.govern.ledger import Ledger, default_ledger_path

TCKN = "10000000146"  # checksum-valid
PROMPT = [{"role": "user", "content": f"Müşterinin T.C. kimlik numarası {TCKN}, iadesini onaylayın."}]
CLEAN = [{"role": "user", "content": "Kırmızı çantanın rengi nedir?"}]


@pytest.fixture
def sent(monkeypatch):
    """Every conversation that would reach the network (ChatEndpoint.complete is the only sender)."""
    calls = []

    def fake_complete(self, messages, **params):
        calls.append((self.config.base_url, list(messages)))
        return "VERDICT: A"

    monkeypatch.setattr(ChatEndpoint, "complete", fake_complete)
    return calls


def endpoint(url: str) -> ChatEndpoint:
    return ChatEndpoint(EndpointConfig(base_url=url, model="m", api_key_env=None))


@pytest.mark.parametrize("url, local", [("http://localhost:8000/v1", True), ("http://127.0.0.5/v1", True),
                                        ("http://[::1]:8000/v1", True), ("https://api.example.com/v1", False),
                                        ("http://10.0.0.2/v1", False), ("http://localhost.evil.com/v1", False)])
def test_is_local(url, local):
    assert is_local(url) is local


def test_a_tckn_prompt_is_not_sent_to_another_machine(sent):
    with pytest.raises(AyarError, match=r"refusing to send 2 requests to api\.example\.com .*1 TCKN.*nothing was "
                                        r"sent"):
        endpoint("https://api.example.com/v1").complete_many([PROMPT, CLEAN])
    assert sent == []
    entry = Ledger(default_ledger_path()).entries()[-1]
    assert entry["event"] == "external_call" and entry["data"]["sent"] is False
    assert entry["data"]["pii_found"] == {"TCKN": 1} and entry["data"]["requests"] == 2
    assert TCKN not in default_ledger_path().read_text(encoding="utf-8")


def test_the_judge_never_sends_a_tckn_prompt(sent):
    from ayar.eval.judge import run_judge

    judge = JudgeConfig(base_url="https://judge.example.com/v1", model="judge", api_key_env=None)
    with pytest.raises(AyarError, match="personal data"):
        run_judge(judge, ["x"], [PROMPT], ["Onaylandı."], ["Tamam."], ["Onaylandı."], resamples=100)
    assert sent == []


def test_clean_prompts_and_local_servers_pass(sent):
    endpoint("https://api.example.com/v1").complete_many([CLEAN])
    endpoint("http://127.0.0.1:8000/v1").complete_many([PROMPT])  # this machine: not scanned, not refused
    assert [url for url, _ in sent] == ["https://api.example.com/v1", "http://127.0.0.1:8000/v1"]
    entries = Ledger(default_ledger_path()).entries()
    assert len(entries) == 1 and entries[0]["data"]["sent"] is True and entries[0]["data"]["pii_found"] == {}


def test_a_run_that_allows_it_sends_and_records_the_transfer(sent, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    ledger = tmp_path / "run_ledger.jsonl"
    (run / "recipe.yaml").write_text(yaml.safe_dump({
        "model": {"path": "org/model"}, "data": {"train": "train.jsonl"},
        "governance": {"allow_external_pii": True, "ledger": str(ledger)}}), encoding="utf-8")
    with guarded(run):
        endpoint("https://api.example.com/v1").complete_many([PROMPT])
    assert len(sent) == 1
    entry = Ledger(ledger).entries()[-1]
    assert entry["data"]["sent"] is True and entry["data"]["allowed_by"] == "governance.allow_external_pii"
    assert entry["data"]["run_dir"] == str(run.resolve()) and len(entry["data"]["batch_sha256"]) == 64
    assert TCKN not in ledger.read_text(encoding="utf-8")
    with pytest.raises(AyarError):  # outside the run's evaluation the default (refuse) applies again
        endpoint("https://api.example.com/v1").complete_many([PROMPT])
