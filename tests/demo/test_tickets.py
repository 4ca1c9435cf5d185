"""Synthetic support tickets: reproducible, full of valid fake PII, with duplicates, and redactable."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from ayar.data.pii.checksums import iban_is_valid, tckn_is_valid
from ayar.data.pii.recognizers import national_phone_digits
from ayar.demo.tickets import ticket_records, with_suffix

N = 400


@pytest.fixture(scope="module")
def tickets():
    return ticket_records(N, seed=7)


@pytest.fixture(scope="module")
def masker():
    from ayar.data.pii import Redactor

    return Redactor()


def user_texts(records):
    return [r["messages"][0]["content"] for r in records]


def test_reproducible_from_the_seed(tickets):
    assert ticket_records(N, seed=7) == tickets
    assert ticket_records(N, seed=8) != tickets
    assert ticket_records(0, seed=7) == []
    with pytest.raises(ValueError):
        ticket_records(-1)


def test_openai_messages_shape(tickets):
    for record in tickets:
        assert list(record) == ["messages"]
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"] for m in record["messages"])


def test_values_are_valid_fakes(tickets):
    text = "\n".join(user_texts(tickets))
    tckns = re.findall(r"(?<!\d)[1-9]\d{10}(?!\d)", text)
    ibans = re.findall(r"TR\d\d(?: ?\d{4}){5} ?\d\d", text)
    emails = re.findall(r"\S+@\S+?(?=[.,]?\s|$)", text)
    assert len(tckns) > N / 3 and all(tckn_is_valid(t) for t in tckns)
    assert len(ibans) > N / 3 and all(iban_is_valid(i) for i in ibans)
    assert len(emails) > N / 3 and all(e.split("@")[1].startswith(("example.", "mail.example.")) for e in emails)


def test_phone_formats_vary(tickets):
    phones = re.findall(r"(?:\+90|0090|0|\()?[\d() .-]{9,16}\d", "\n".join(user_texts(tickets)))
    shapes = Counter(re.sub(r"\d", "#", p) for p in phones if national_phone_digits(p))
    assert len(shapes) >= 6


def test_names_carry_case_suffixes(tickets):
    text = "\n".join(user_texts(tickets))
    assert len(re.findall(r"\b\w+'(?:nin|nın|nun|nün|in|ın|un|ün|e|a|ye|ya|den|dan|ten|tan)\b", text)) > N / 10


def test_some_exact_and_near_duplicates(tickets):
    users = user_texts(tickets)
    exact = len(users) - len(set(users))
    near = sum(1 for u in users if u.endswith(" Lütfen yardımcı olun.") or "Merhabalar" in u or u.startswith("Merhaba. "))
    assert 0.01 * N <= exact <= 0.1 * N
    assert near >= 0.01 * N


@pytest.mark.parametrize(("name", "case", "expected"), [
    ("Ayşe", "genitive", "Ayşe'nin"), ("Mehmet", "dative", "Mehmet'e"), ("Yılmaz", "ablative", "Yılmaz'dan"),
    ("Ufuk", "ablative", "Ufuk'tan"), ("Kaya", "dative", "Kaya'ya"), ("Gül", "genitive", "Gül'ün"),
])
def test_with_suffix_follows_vowel_harmony(name, case, expected):
    assert with_suffix(name, case) == expected


def test_redaction_removes_the_structured_values(tickets, masker):
    redacted = [r.record for r in masker.redact_records(tickets)]
    text = "\n".join(m["content"] for r in redacted for m in r["messages"])
    assert not re.search(r"\d{7,}|@|TR\d\d", text)  # no TCKN, phone, IBAN, card or e-mail left
    assert text.count("[TCKN]") >= len(re.findall(r"(?<!\d)[1-9]\d{10}(?!\d)", "\n".join(user_texts(tickets))))
