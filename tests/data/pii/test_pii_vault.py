"""The PII vault keeps duties apart: the pseudonymisation secret cannot open it; only the DPO's key can."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from ayar.data.pii import RedactionConfig, Redactor
from ayar.data.pii.vault import read_private_key, read_public_key, read_vault, write_keypair
from ayar.errors import AyarError

SECRET = "pseudonym-secret-0123456789abcdef"
PASSPHRASE = "the DPO's own passphrase"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return write_keypair(tmp_path_factory.mktemp("dpo"), PASSPHRASE)


@pytest.fixture(scope="module")
def vault(keys, tmp_path_factory):
    """A vault written by a redaction run that holds the secret and the public key only."""
    path = tmp_path_factory.mktemp("vault") / "vault.bin"
    redactor = Redactor(RedactionConfig(default_operator="pseudonymize", vault_path=path, vault_public_key=keys[0]),
                        secret=SECRET)
    redactor.redact_text("TC kimlik 10000000146")
    assert redactor.save_vault() == 1
    return path


def test_the_pseudonym_secret_cannot_open_the_vault(vault, keys):
    public, private = keys
    # Neither as the private key's passphrase, nor as key material, nor by the old derivation from the secret.
    with pytest.raises(AyarError, match="wrong passphrase"):
        read_private_key(private, SECRET)
    for derived in (hashlib.sha256(SECRET.encode()).digest(), SECRET.encode()[:32]):
        with pytest.raises(AyarError, match="sealed to another key"):
            read_vault(vault, X25519PrivateKey.from_private_bytes(derived))
    with pytest.raises(AyarError):
        read_vault(vault, SECRET.encode())  # the old API: a vault key derived from the pseudonym secret
    assert read_vault(vault, read_private_key(private, PASSPHRASE))["TCKN"]  # the DPO's key opens it


def test_private_key_is_a_salted_scrypt_envelope_and_public_keys_are_32_bytes(keys, tmp_path):
    public, private = keys
    envelope = json.loads(private.read_text())
    assert envelope["kdf"] == "scrypt" and envelope["n"] >= 2**15 and len(envelope["salt"]) >= 20  # 16 bytes, base64
    assert private.stat().st_mode & 0o777 == 0o600
    # Two pairs with one passphrase share nothing: the salt differs.
    _, again = write_keypair(tmp_path / "again", PASSPHRASE)
    assert json.loads(again.read_text())["salt"] != envelope["salt"]
    assert len(read_public_key(public).public_bytes_raw()) == 32
    short = tmp_path / "short.key"
    short.write_text("ayar-vault-public-key/1 AAAA\n")
    with pytest.raises(AyarError, match="not an ayar vault public key"):
        read_public_key(short)
    with pytest.raises(AyarError, match="at least 12"):
        write_keypair(tmp_path / "weak", "short")


def test_a_vault_needs_a_public_key(tmp_path):
    with pytest.raises(ValidationError, match="vault_public_key"):
        RedactionConfig(vault_path=tmp_path / "v.bin")


def test_a_vault_sealed_to_another_key_is_not_appended_to(vault, tmp_path):
    other_public, _ = write_keypair(tmp_path / "other", PASSPHRASE)
    redactor = Redactor(RedactionConfig(default_operator="pseudonymize", vault_path=vault,
                                        vault_public_key=other_public), secret=SECRET)
    redactor.redact_text("TC kimlik 10000000146")
    with pytest.raises(AyarError, match="another public key"):
        redactor.save_vault()


def test_keygen_and_lookup_commands(vault, keys, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ayar.cli import app

    monkeypatch.setenv("AYAR_TEST_VAULT_PASS", PASSPHRASE)
    made = CliRunner().invoke(app, ["data", "vault-keygen", str(tmp_path / "k"), "--passphrase-env",
                                    "AYAR_TEST_VAULT_PASS"])
    assert made.exit_code == 0, made.output
    assert {p.name for p in (tmp_path / "k").iterdir()} == {"vault_public.key", "vault_private.key"}
    shown = CliRunner().invoke(app, ["data", "vault-lookup", str(vault), "--key", str(keys[1]), "--passphrase-env",
                                     "AYAR_TEST_VAULT_PASS"])
    assert shown.exit_code == 0, shown.output
    entries = json.loads(shown.stdout)
    assert [originals for by_fake in entries.values() for originals in by_fake.values()] == [["10000000146"]]
    monkeypatch.setenv("AYAR_TEST_VAULT_PASS", SECRET)  # the pseudonym secret is not the passphrase
    refused = CliRunner().invoke(app, ["data", "vault-lookup", str(vault), "--key", str(keys[1]),
                                       "--passphrase-env", "AYAR_TEST_VAULT_PASS"])
    assert isinstance(refused.exception, AyarError) and "wrong passphrase" in str(refused.exception)
