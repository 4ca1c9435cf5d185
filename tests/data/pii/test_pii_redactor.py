"""Operators (mask, pseudonymize, hash, drop_record), secrets, the vault and record walking."""

from __future__ import annotations

import copy
import os
import re
from typing import get_args

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from ayar.data.pii import PLACEHOLDERS, RedactionConfig, read_vault
from ayar.data.pii.checksums import iban_is_valid, luhn_is_valid, tckn_is_valid, vkn_is_valid
from ayar.data.pii.config import EntityName
from ayar.data.pii.fakes import harmony_class
from ayar.data.pii.vault import read_private_key, write_keypair
from ayar.errors import AyarError

TEXT = ("Ben Ayşe Yılmaz, TC 10000000146. Ayşe'nin telefonu 0532 123 45 67, IBAN TR33 0006 1005 1978 6457 8413 26, "
        "kart 4111 1111 1111 1111, vergi no 1234567890, e-posta ayse@example.com.")
ORIGINALS = ["Ayşe", "Yılmaz", "10000000146", "532 123 45 67", "TR33 0006", "4111 1111", "1234567890",
             "ayse@example.com"]


def test_mask_placeholders(masker):
    text, findings = masker.redact_text(TEXT)
    assert text == ("Ben [AD_SOYAD], TC [TCKN]. [AD_SOYAD]'nin telefonu [TELEFON], IBAN [IBAN], kart [KART_NO], "
                    "vergi no [VKN], e-posta [E_POSTA].")
    assert [f.entity_type for f in findings] == ["PERSON", "TCKN", "PERSON", "PHONE_NUMBER", "IBAN", "CREDIT_CARD",
                                                 "VKN", "EMAIL_ADDRESS"]
    for f in findings:  # output spans point at the placeholders
        assert text[f.output_start:f.output_end] == f"[{PLACEHOLDERS[f.entity_type]}]"


def test_findings_never_hold_the_original(masker):
    _, findings = masker.redact_text(TEXT)
    dumped = repr([f.to_dict() for f in findings])
    assert not any(value in dumped for value in ORIGINALS)


def test_placeholders_cover_every_entity_type():
    assert set(get_args(EntityName)) == set(PLACEHOLDERS)


def test_pseudonymize_is_consistent_and_keyed(make_redactor, secrets):
    _, other_secret = secrets
    first = make_redactor(default_operator="pseudonymize")
    again = make_redactor(default_operator="pseudonymize")
    other = make_redactor(secret=other_secret, default_operator="pseudonymize")
    text = "TC 10000000146 ve yine TC 10000000146; Mehmet Kaya ile Mehmet Kaya."
    out, _ = first.redact_text(text)
    fakes = re.findall(r"\d{11}", out)
    assert len(fakes) == 2 and fakes[0] == fakes[1] != "10000000146" and tckn_is_valid(fakes[0])
    assert out.count(out.split(" ile ")[1].rstrip(".")) == 2  # the same fake name twice
    assert again.redact_text(text)[0] == out                    # another instance, same secret
    assert other.redact_text(text)[0] != out                    # another secret


def test_pseudonyms_pass_checksums_and_keep_the_shape(make_redactor):
    redactor = make_redactor(default_operator="pseudonymize")
    out, findings = redactor.redact_text(TEXT)
    values = {f.entity_type: out[f.output_start:f.output_end] for f in findings}
    assert tckn_is_valid(values["TCKN"])
    assert vkn_is_valid(values["VKN"])
    assert iban_is_valid(values["IBAN"]) and re.fullmatch(r"TR\d\d( \d{4}){5} \d\d", values["IBAN"])
    assert luhn_is_valid(values["CREDIT_CARD"]) and re.fullmatch(r"4\d{3}( \d{4}){3}", values["CREDIT_CARD"])
    assert re.fullmatch(r"05\d\d \d{3} \d\d \d\d", values["PHONE_NUMBER"])
    assert values["EMAIL_ADDRESS"].endswith(("example.com", "example.org", "example.net"))
    assert not any(value in out for value in ORIGINALS)


def test_one_phone_number_written_two_ways_gets_one_fake(make_redactor):
    redactor = make_redactor(default_operator="pseudonymize")
    out, _ = redactor.redact_text("Tel: +90 (532) 123 45 67 ya da 05321234567")
    first, second = re.findall(r"\+90 \((\d{3})\) (\d{3}) (\d\d) (\d\d)|0(\d{10})", out)
    assert "".join(first[:4]) == second[4]


def test_fake_name_keeps_the_suffix_and_its_harmony(make_redactor):
    redactor = make_redactor(operators={"PERSON": "pseudonymize"})
    for word, suffix in (("Ayşe", "'nin"), ("Mehmet", "'e"), ("Yılmaz", "'dan"), ("Ufuk", "'tan")):
        out, findings = redactor.redact_text(f"Dün {word}{suffix} aradım.")
        fake = out[findings[0].output_start:findings[0].output_end]
        assert out == f"Dün {fake}{suffix} aradım." and fake != word
        assert harmony_class(fake) == harmony_class(word)


def test_name_case_is_kept(make_redactor):
    out, _ = make_redactor(operators={"PERSON": "pseudonymize"}).redact_text("AYŞE YILMAZ")
    assert out.isupper() and out != "AYŞE YILMAZ" and len(out.split()) == 2


def test_hash(make_redactor, secrets):
    _, other_secret = secrets
    redactor = make_redactor(default_operator="hash", hash_length=16)
    out, _ = redactor.redact_text("TC 10000000146, yine 10000000146")
    hashes = re.findall(r"\[TCKN:([0-9a-f]+)\]", out)
    assert len(hashes) == 2 and hashes[0] == hashes[1] and len(hashes[0]) == 16
    assert make_redactor(secret=other_secret, default_operator="hash").redact_text("TC 10000000146")[0] != \
        make_redactor(default_operator="hash").redact_text("TC 10000000146")[0]


def test_drop_record(make_redactor):
    redactor = make_redactor(secret=None, operators={"TCKN": "drop_record"})
    dropped = redactor.redact_record({"text": "TC 10000000146"})
    kept = redactor.redact_record({"text": "Telefon 0532 123 45 67"})
    assert dropped.dropped and dropped.record is None and dropped.findings[0].operator == "drop_record"
    assert not kept.dropped and kept.record == {"text": "Telefon [TELEFON]"}
    assert redactor.redact_text("TC 10000000146")[0] == "TC [TCKN]"  # the text itself is still masked


def test_missing_secret_is_a_clear_error(analyzer, monkeypatch):
    from ayar.data.pii import Redactor

    monkeypatch.delenv("AYAR_PII_SECRET", raising=False)
    with pytest.raises(AyarError, match=r"PERSON.*AYAR_PII_SECRET"):
        Redactor(RedactionConfig(operators={"PERSON": "pseudonymize"}), analyzer=analyzer)
    with pytest.raises(AyarError, match="MY_KEY"):
        Redactor(RedactionConfig(default_operator="hash", secret_env="MY_KEY"), analyzer=analyzer)
    Redactor(RedactionConfig(operators={"TCKN": "drop_record"}), analyzer=analyzer)  # mask/drop need none


def test_secret_from_env_or_file(analyzer, monkeypatch, tmp_path, secrets):
    from ayar.data.pii import Redactor

    secret, _ = secrets

    monkeypatch.setenv("AYAR_PII_SECRET", secret)
    from_env = Redactor(RedactionConfig(default_operator="hash"), analyzer=analyzer).redact_text("TC 10000000146")
    key_file = tmp_path / "pii.key"
    key_file.write_text(secret + "\n")
    monkeypatch.delenv("AYAR_PII_SECRET")
    config = RedactionConfig(default_operator="hash", secret_file=key_file)
    assert Redactor(config, analyzer=analyzer).redact_text("TC 10000000146") == from_env
    key_file.write_text("short")
    with pytest.raises(AyarError, match="at least 16"):
        Redactor(config, analyzer=analyzer)
    with pytest.raises(AyarError, match="cannot read"):
        Redactor(RedactionConfig(default_operator="hash", secret_file=tmp_path / "missing.key"), analyzer=analyzer)


def test_vault_maps_fakes_back(make_redactor, tmp_path):
    public, private = write_keypair(tmp_path / "dpo", "correct horse battery")
    dpo, other = read_private_key(private, "correct horse battery"), X25519PrivateKey.generate()
    vault = tmp_path / "vault.bin"
    redactor = make_redactor(default_operator="pseudonymize", vault_path=vault, vault_public_key=public)
    out, findings = redactor.redact_text("TC 10000000146, Ayşe Yılmaz")
    assert redactor.save_vault() == 2
    fake_tckn = out[findings[0].output_start:findings[0].output_end]
    content = read_vault(vault, dpo)
    assert content["TCKN"][fake_tckn] == ["10000000146"]
    assert b"10000000146" not in vault.read_bytes()
    assert os.stat(vault).st_mode & 0o777 == 0o600
    with pytest.raises(AyarError, match="sealed to another key"):
        read_vault(vault, other)
    # A second run appends to the same vault.
    second = make_redactor(default_operator="pseudonymize", vault_path=vault, vault_public_key=public)
    second.redact_text("vergi no 1234567890")
    second.save_vault()
    assert set(read_vault(vault, dpo)) == {"TCKN", "PERSON", "VKN"}


def test_config_is_validated():
    with pytest.raises(ValidationError, match="operatorz"):
        RedactionConfig(operatorz={})
    with pytest.raises(ValidationError):
        RedactionConfig(operators={"TCKNN": "mask"})
    with pytest.raises(ValidationError):
        RedactionConfig(operators={"TCKN": "encrypt"})
    with pytest.raises(ValidationError):
        RedactionConfig(hash_length=4)


RECORD = {
    "id": 7,
    "messages": [
        {"role": "user", "content": "Ben Ayşe Yılmaz, TC 10000000146"},
        {"role": "assistant", "content": "Teşekkürler Ayşe Hanım."},
    ],
    "chosen": "Telefonunuz 0532 123 45 67 olarak kayıtlı.",
    "rejected": ["IBAN TR33 0006 1005 1978 6457 8413 26"],
    "meta": {"tckn": 10000000146},
}


def test_record_walks_every_string(masker):
    before = copy.deepcopy(RECORD)
    result = masker.redact_record(RECORD)
    assert RECORD == before  # the input is not modified
    assert result.record == {
        "id": 7,
        "messages": [
            {"role": "user", "content": "Ben [AD_SOYAD], TC [TCKN]"},
            {"role": "assistant", "content": "Teşekkürler [AD_SOYAD] Hanım."},
        ],
        "chosen": "Telefonunuz [TELEFON] olarak kayıtlı.",
        "rejected": ["IBAN [IBAN]"],
        "meta": {"tckn": "[TCKN]"},  # a TCKN stored as a JSON number is redacted too
    }
    assert {f.field for f in result.findings} == {"messages[0].content", "messages[1].content", "chosen",
                                                  "rejected[0]", "meta.tckn"}


@pytest.mark.parametrize("fields", [["messages.content"], ["messages[*].content"]])
def test_record_only_named_fields(masker, fields):
    record = masker.redact_record(RECORD, fields=fields).record
    assert record["messages"][0]["content"] == "Ben [AD_SOYAD], TC [TCKN]"
    assert record["chosen"] == RECORD["chosen"] and record["meta"] == RECORD["meta"]


def test_batch_equals_one_by_one(masker):
    texts = [TEXT, "", "user", "Doğum tarihim 12.03.1985", "Hiçbir şey yok burada."]
    assert masker.redact_texts(texts) == [masker.redact_text(t) for t in texts]


def test_one_date_written_two_ways_gets_one_hash(make_redactor):
    out, _ = make_redactor(default_operator="hash").redact_text("Doğum tarihi 12.03.1985, d.t. 1985-03-12")
    hashes = re.findall(r"\[DOGUM_TARIHI:([0-9a-f]+)\]", out)
    assert len(hashes) == 2 and hashes[0] == hashes[1]
