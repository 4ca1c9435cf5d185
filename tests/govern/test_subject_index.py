"""The subject index: the values behind redaction findings are found in the right text, even when several turns
share a role, and stored only as keyed digests."""

from __future__ import annotations

from ayar.data.formats import convert
from ayar.data.pii.config import RedactionConfig
from ayar.data.redaction import Redaction
from ayar.govern.subject import KINDS, SubjectCollector, key_id, subject_digest

SECRET = b"a-test-secret-of-32-characters!!"


def test_each_turns_identifiers_are_indexed_under_keyed_digests():
    raw = {"messages": [
        {"role": "user", "content": "Kimlik numaram 10000000146, sorun devam ediyor."},
        {"role": "assistant", "content": "Kontrol ediyorum."},
        {"role": "user", "content": "Eşimin kimlik numarası 10000000078; telefon 0532 123 45 67."},
        {"role": "assistant", "content": "Teşekkürler."}]}
    record = convert(raw, "messages", "tickets.jsonl", 1)
    redaction = Redaction(RedactionConfig(), 1)
    [(_, redacted, found)] = redaction.submit([(record, 0, "MUS-7", None)])
    assert "10000000146" not in str(redacted)
    collector = SubjectCollector(SECRET)
    collector.add(record, "MUS-7", found)
    collector.finish({0: "train"}, lambda row: f"tickets.jsonl:{row + 1}")
    expected = {subject_digest(SECRET, KINDS["tckn"], "10000000146"), subject_digest(SECRET, KINDS["tckn"], "10000000078"),
                subject_digest(SECRET, KINDS["phone"], "+90 (532) 123-4567"),
                subject_digest(SECRET, KINDS["customer_id"], " MUS-7 ")}
    assert expected <= set(collector.index)
    assert all(entry == {"splits": {"train": 1}, "records": ["tickets.jsonl:1"]} for entry in collector.index.values())
    other = SubjectCollector(b"another-secret-of-32-characters!")
    assert subject_digest(other.secret, "TCKN", "10000000146") not in collector.index
    assert key_id(SECRET) != key_id(other.secret)


def test_without_a_secret_nothing_is_indexed(tmp_path):
    collector = SubjectCollector(None)
    collector.add(None, "MUS-7", [])
    collector.finish({0: "train"}, str)
    (tmp_path / "subjects.json").write_text("{}")  # an index from an earlier run with a secret
    result = collector.write(tmp_path)
    assert result["written"] is False and "AYAR_PII_SECRET" in result["reason"]
    assert not (tmp_path / "subjects.json").exists()
