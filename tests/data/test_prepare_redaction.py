"""Batch redaction: the same output as ``Redactor.redact_records``, with a text cache and with worker processes."""

from __future__ import annotations

import pytest

from ayar.data.formats import convert, to_json
from ayar.data.pii import RedactionConfig, Redactor
from ayar.data.redaction import Redaction
from ayar.demo.tickets import ticket_records

SYSTEM = {"role": "system", "content": "Müşteri temsilcisisiniz. Destek hattı 0850 222 33 44, e-posta destek@example.com."}


@pytest.fixture(scope="module")
def records():
    tickets = ticket_records(40, seed=5)
    tickets += [tickets[3], tickets[7]]  # exact duplicates: served from the cache
    return [convert({"messages": [SYSTEM, *t["messages"]]}, "messages", "t.jsonl", i + 1)
            for i, t in enumerate(tickets)]


def _run(redaction: Redaction, records: list, batch: int = 16) -> list[tuple]:
    done = []
    for start in range(0, len(records), batch):
        done += redaction.submit([(r,) for r in records[start:start + batch]])
    done += redaction.drain()
    redaction.close()
    return done


@pytest.mark.parametrize("workers", [1, 2])
def test_same_output_as_redact_records(records, workers):
    config = RedactionConfig(operators={"CREDIT_CARD": "drop_record"})
    expected = Redactor(config).redact_records([to_json(r) for r in records])
    done = _run(Redaction(config, workers), records)
    assert [item[0] for item, _, _ in done] == records  # order kept
    for (_, redacted, found), want in zip(done, expected, strict=True):
        assert (redacted is None) == want.dropped
        if redacted is not None:
            assert to_json(redacted) == want.record
        assert sorted((f.entity_type, f.output_start, f.output_end) for f, _ in found) == sorted(
            (f.entity_type, f.output_start, f.output_end) for f in want.findings)
    assert any(redacted is None for _, redacted, _ in done)
    system_found = [f.entity_type for f, _ in done[0][2] if f.field == "system"]
    assert sorted(system_found) == ["EMAIL_ADDRESS", "PHONE_NUMBER"]


def test_off_returns_records_unchanged(records):
    done = _run(Redaction(None), records[:3])
    assert [(redacted, found) for _, redacted, found in done] == [(r, []) for r in records[:3]]
