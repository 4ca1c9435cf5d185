"""An encrypted record of which original value each pseudonym or hash stands for.

For authorised re-identification only (a data subject's access request, an
incident). The vault is sealed to a data-protection officer's (DPO's) public
key, so duties stay separate:

- whoever runs ``prepare`` / ``ayar data redact`` holds the pseudonymisation
  secret and the DPO's *public* key: they can add to the vault, never read it;
- the DPO holds the private key (32 random bytes, X25519), itself encrypted
  under a passphrase with a salted, memory-hard KDF (scrypt), and needs no
  pseudonymisation secret to read the vault.

Each save appends one sealed segment (one JSON line): an ephemeral X25519 key
agreement with the DPO's key, HKDF-SHA256 to a 256-bit key, AES-256-GCM over
the entries (RFC 7748, RFC 5869, NIST SP 800-38D). The file is rewritten
atomically with owner-only permissions. Several originals may share one fake
(a name drawn from a gazetteer of a few hundred), so a lookup returns all of them.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ...errors import AyarError
from ...fsutil import atomic_write

SEGMENT_FORMAT = "ayar-pii-vault/2"
PUBLIC_FORMAT = "ayar-vault-public-key/1"
PRIVATE_FORMAT = "ayar-vault-private-key/1"
SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # ~32 MiB and ~0.1 s per try: costly to guess passphrases at scale
MIN_PASSPHRASE = 12
_RAW = serialization.Encoding.Raw


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def _scrypt_key(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def write_keypair(folder: str | Path, passphrase: str) -> tuple[Path, Path]:
    """Create a DPO key pair: ``vault_public.key`` (for redaction) and ``vault_private.key`` (for the DPO).

    Returns:
        (public key file, private key file); the private one is owner-only and encrypted.

    Raises:
        AyarError: the passphrase is shorter than 12 characters, or a key file already exists.
    """
    if len(passphrase) < MIN_PASSPHRASE:
        raise AyarError(f"the vault passphrase has {len(passphrase)} characters; use at least {MIN_PASSPHRASE}")
    folder = Path(folder)
    public_path, private_path = folder / "vault_public.key", folder / "vault_private.key"
    for path in (public_path, private_path):
        if path.exists():
            raise AyarError(f"{path} already exists; choose another folder (a new key pair cannot open old vaults)")
    key = X25519PrivateKey.generate()  # 32 random bytes from the OS
    raw = key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    salt, nonce = os.urandom(16), os.urandom(12)
    sealed = AESGCM(_scrypt_key(passphrase, salt, **SCRYPT)).encrypt(nonce, raw, PRIVATE_FORMAT.encode())
    private = {"format": PRIVATE_FORMAT, "kdf": "scrypt", **SCRYPT, "salt": _b64(salt), "nonce": _b64(nonce),
               "ciphertext": _b64(sealed)}
    public = key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    with atomic_write(private_path, permissions=0o600) as fh:
        json.dump(private, fh)
    with atomic_write(public_path) as fh:
        fh.write(f"{PUBLIC_FORMAT} {_b64(public)}\n")
    return public_path, private_path


def read_public_key(path: str | Path) -> X25519PublicKey:
    """The DPO's public key from a ``vault_public.key`` file.

    Raises:
        AyarError: the file cannot be read or is not such a key (exactly 32 bytes).
    """
    path = Path(path)
    try:
        kind, _, value = path.read_text(encoding="utf-8").strip().partition(" ")
        raw = _unb64(value) if kind == PUBLIC_FORMAT else b""
    except (OSError, UnicodeDecodeError, ValueError):
        raw = b""
    if len(raw) != 32:
        raise AyarError(f"{path}: not an ayar vault public key; create one with `ayar data vault-keygen`")
    return X25519PublicKey.from_public_bytes(raw)


def read_private_key(path: str | Path, passphrase: str) -> X25519PrivateKey:
    """The DPO's private key, decrypted with its passphrase.

    Raises:
        AyarError: the file cannot be read, is not such a key, or the passphrase is wrong.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != PRIVATE_FORMAT or data.get("kdf") != "scrypt":
            raise ValueError
        key = _scrypt_key(passphrase, _unb64(data["salt"]), int(data["n"]), int(data["r"]), int(data["p"]))
        nonce, sealed = _unb64(data["nonce"]), _unb64(data["ciphertext"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise AyarError(f"{path}: not an ayar vault private key") from None
    try:
        raw = AESGCM(key).decrypt(nonce, sealed, PRIVATE_FORMAT.encode())
    except InvalidTag:
        raise AyarError(f"{path}: wrong passphrase for this vault private key") from None
    return X25519PrivateKey.from_private_bytes(raw)


def _segment_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    info = SEGMENT_FORMAT.encode() + ephemeral + recipient
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal(entries: dict, recipient: X25519PublicKey) -> str:
    """One vault segment (a JSON line) that only ``recipient``'s private key can open."""
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    rec_pub = recipient.public_bytes(_RAW, serialization.PublicFormat.Raw)
    key = _segment_key(ephemeral.exchange(recipient), eph_pub, rec_pub)
    nonce = os.urandom(12)
    plain = json.dumps(entries, ensure_ascii=False, sort_keys=True).encode("utf-8")
    sealed = AESGCM(key).encrypt(nonce, plain, SEGMENT_FORMAT.encode())
    return json.dumps({"format": SEGMENT_FORMAT, "recipient": _b64(rec_pub), "ephemeral": _b64(eph_pub),
                       "nonce": _b64(nonce), "ciphertext": _b64(sealed)})


def _segments(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        raise AyarError(f"{path}: cannot read the PII vault") from None
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            segment = json.loads(line)
            if segment.get("format") != SEGMENT_FORMAT:
                raise ValueError
        except (ValueError, AttributeError):
            raise AyarError(f"{path}:{number}: not an ayar PII vault segment (format {SEGMENT_FORMAT})") from None
        out.append(segment)
    return out


def read_vault(path: str | Path, private_key: X25519PrivateKey) -> dict[str, dict[str, list[str]]]:
    """Decrypt a vault: entity type -> replacement -> originals (every segment merged).

    Raises:
        AyarError: ``private_key`` is not one, the file cannot be read, it was sealed to
            another key, or it is damaged.
    """
    path = Path(path)
    if not isinstance(private_key, X25519PrivateKey):
        raise AyarError(f"{path}: a vault opens only with the data-protection officer's private key "
                        "(read_private_key), never with a secret")
    mine = private_key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    merged: dict[str, dict[str, set[str]]] = {}
    for number, segment in enumerate(_segments(path), start=1):
        try:
            eph = _unb64(segment["ephemeral"])
            key = _segment_key(private_key.exchange(X25519PublicKey.from_public_bytes(eph)), eph, mine)
            plain = AESGCM(key).decrypt(_unb64(segment["nonce"]), _unb64(segment["ciphertext"]),
                                        SEGMENT_FORMAT.encode())
        except (InvalidTag, KeyError, ValueError):
            raise AyarError(f"{path}:{number}: cannot open this vault segment: it was sealed to another key, or "
                            "the file is damaged") from None
        for entity, by_fake in json.loads(plain).items():
            for fake, originals in by_fake.items():
                merged.setdefault(entity, {}).setdefault(fake, set()).update(originals)
    return {e: {f: sorted(o) for f, o in by_fake.items()} for e, by_fake in merged.items()}


class PseudonymVault:
    """Replacement -> original pairs collected during redaction, appended sealed to the vault."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, set[str]]] = {}

    def __len__(self) -> int:
        return sum(len(by_fake) for by_fake in self._entries.values())

    def add(self, entity: str, replacement: str, original: str) -> None:
        self._entries.setdefault(entity, {}).setdefault(replacement, set()).add(original)

    def save(self, path: str | Path, recipient: X25519PublicKey) -> None:
        """Append the collected pairs as one segment sealed to ``recipient``, atomically.

        Raises:
            AyarError: the existing vault is not one, or was sealed to another public key.
        """
        path = Path(path)
        existing = _segments(path) if path.exists() else []
        mine = _b64(recipient.public_bytes(_RAW, serialization.PublicFormat.Raw))
        if any(s.get("recipient") != mine for s in existing):
            raise AyarError(f"{path}: this vault is sealed to another public key; use that key or another vault_path")
        entries = {e: {f: sorted(o) for f, o in by_fake.items()} for e, by_fake in self._entries.items()}
        with atomic_write(path, permissions=0o600) as fh:
            fh.writelines(json.dumps(s) + "\n" for s in existing)
            fh.write(seal(entries, recipient) + "\n")
