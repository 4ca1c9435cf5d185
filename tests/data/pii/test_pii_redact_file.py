"""redact_jsonl: the output, the report and the rejects never hold an original value."""

from __future__ import annotations

import json

import pytest

from ayar.data.pii import RedactionConfig, redact_jsonl
from ayar.errors import AyarError

# Every original value, exactly as written in RECORDS.
ORIGINALS = {
    "Ayşe Yılmaz", "10000000146", "0532 123 45 67", "TR33 0006 1005 1978 6457 8413 26", "ayse.yilmaz@example.com",
    "Mehmet", "Karabacak", "+90 (212) 555 12 34", "12345678950", "34 ABC 123", "12.03.1985", "1234567890",
    "Atatürk Mah. Gül Sk. No: 12 D: 5 Kadıköy/İstanbul", "4111 1111 1111 1111", "192.168.1.10",
}
RECORDS = [
    {"messages": [
        {"role": "user", "content": "Merhaba, ben Ayşe Yılmaz. TC kimlik numaram 10000000146, telefonum 0532 123 45 67."},
        {"role": "assistant", "content": "Teşekkürler Ayşe Yılmaz, kaydınızı aldık."},
    ]},
    {"prompt": "İadeyi TR33 0006 1005 1978 6457 8413 26 hesabıma yapın, dönüş ayse.yilmaz@example.com adresine.",
     "chosen": "Mehmet'e iletildi.", "rejected": "Karabacak Bey'e sorun."},
    {"text": "Sayın Karabacak, ofis numaramız +90 (212) 555 12 34."},
    {"text": "Eşimin TC'si 12345678950, aracımızın plakası 34 ABC 123, doğum tarihi 12.03.1985."},
    {"text": "Vergi no: 1234567890, adres Atatürk Mah. Gül Sk. No: 12 D: 5 Kadıköy/İstanbul"},
    {"text": "Kartım 4111 1111 1111 1111, sunucu IP 192.168.1.10"},
    {"text": "Hiç kişisel veri yok."},
]


def write_jsonl(path, records, extra_lines=()):
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def assert_no_original(*paths):
    for path in paths:
        content = path.read_text(encoding="utf-8")
        leaked = sorted(v for v in ORIGINALS if v in content)
        assert not leaked, f"{path.name} holds {leaked}"


@pytest.mark.parametrize("operators", [
    {},                                                                     # mask everything
    {"default_operator": "pseudonymize", "operators": {"TCKN": "drop_record"}},
    {"default_operator": "hash"},
])
def test_no_original_survives(make_redactor, tmp_path, operators):
    src, out, report, rejects = (tmp_path / n for n in ("in.jsonl", "out.jsonl", "report.json", "rejects.jsonl"))
    write_jsonl(src, RECORDS)
    summary = redact_jsonl(src, out, report_path=report, rejects_path=rejects, redactor=make_redactor(**operators))
    assert_no_original(out, report, rejects)
    assert json.loads(report.read_text(encoding="utf-8")) == summary
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == summary["records"] - summary["records_dropped"]
    assert summary["records"] == len(RECORDS) and summary["records_changed"] == len(RECORDS) - 1


def test_report_counts_and_examples(masker, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, RECORDS)
    progress: list[int] = []
    summary = redact_jsonl(src, out, redactor=masker, progress=progress.append)
    assert progress[-1] == len(RECORDS)
    assert summary["entities"] == {"ADDRESS": 1, "CREDIT_CARD": 1, "DATE_OF_BIRTH": 1, "EMAIL_ADDRESS": 1,
                                   "IBAN": 1, "IP_ADDRESS": 1, "LICENSE_PLATE": 1, "PERSON": 5, "PHONE_NUMBER": 2,
                                   "TCKN": 2, "VKN": 1}
    assert summary["records_dropped"] == 0 and summary["operators"]["TCKN"] == "mask"
    assert len(summary["examples"]) == 5
    for example in summary["examples"]:
        assert "[" in example["snippet"] and example["line"] >= 1 and example["field"]
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][0] == {"role": "user",
                                    "content": "Merhaba, ben [AD_SOYAD]. TC kimlik numaram [TCKN], telefonum [TELEFON]."}


def test_drop_record_is_listed_in_rejects(make_redactor, tmp_path):
    src, out, rejects = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    write_jsonl(src, RECORDS)
    summary = redact_jsonl(src, out, rejects_path=rejects, redactor=make_redactor(operators={"TCKN": "drop_record"}))
    assert summary["records_dropped"] == 2
    assert [json.loads(line)["line"] for line in rejects.read_text().splitlines()] == [1, 4]
    assert "TCKN" not in out.read_text(encoding="utf-8")


def test_only_named_fields(masker, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, RECORDS[1:2])
    redact_jsonl(src, out, fields=["chosen"], redactor=masker)
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["chosen"] == "[AD_SOYAD]'e iletildi." and record["prompt"] == RECORDS[1]["prompt"]


def test_bad_lines_are_all_reported_and_nothing_is_written(masker, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    out.write_text("previous output\n")
    write_jsonl(src, RECORDS[:2], extra_lines=['{"text": "TC 10000000146"', "", "[1, 2]"])
    with pytest.raises(AyarError) as error:
        redact_jsonl(src, out, redactor=masker)
    message = str(error.value)
    assert f"{src}:3: invalid JSON" in message and f"{src}:5: expected a JSON object, found list" in message
    assert "10000000146" not in message  # the bad line's content is never echoed
    assert out.read_text() == "previous output\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary file left


def test_missing_input(masker, tmp_path):
    with pytest.raises(AyarError, match="not found"):
        redact_jsonl(tmp_path / "nope.jsonl", tmp_path / "out.jsonl", redactor=masker)


def test_config_builds_the_redactor(tmp_path, monkeypatch):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, RECORDS[:1])
    monkeypatch.delenv("AYAR_PII_SECRET", raising=False)
    with pytest.raises(AyarError, match="AYAR_PII_SECRET"):
        redact_jsonl(src, out, config=RedactionConfig(default_operator="hash"))
    assert not out.exists()
