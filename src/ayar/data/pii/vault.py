"""An encrypted record of which original value each pseudonym or hash stands for.

For authorised re-identification only (a data subject's access request, an
incident): the file is encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from
``cryptography``) under a key derived from the pseudonymisation secret, and
is written atomically with owner-only permissions. Without the secret the
file is unreadable. Several originals may share one fake (a name drawn from a
gazetteer of a few hundred), so a lookup returns all of them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ...errors import AyarError
from ...fsutil import atomic_write


def vault_key(secret: bytes) -> bytes:
    """The Fernet key derived from the pseudonymisation secret (HMAC-SHA256 with a fixed label)."""
    return base64.urlsafe_b64encode(hmac.new(secret, b"ayar-pii-vault-v1", hashlib.sha256).digest())


def read_vault(path: str | Path, secret: bytes) -> dict[str, dict[str, list[str]]]:
    """Decrypt a vault: entity type -> replacement -> originals.

    Raises:
        AyarError: the file cannot be read, or the secret is not the one it was written with.
    """
    path = Path(path)
    try:
        token = path.read_bytes()
    except OSError as exc:
        raise AyarError(f"{path}: cannot read the PII vault ({exc.strerror})") from None
    try:
        return json.loads(Fernet(vault_key(secret)).decrypt(token))
    except InvalidToken:
        raise AyarError(f"{path}: cannot decrypt the PII vault: the secret differs from the one it was "
                        "written with, or the file is damaged") from None


class PseudonymVault:
    """Replacement -> original pairs collected during redaction, saved encrypted."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, set[str]]] = {}

    def __len__(self) -> int:
        return sum(len(by_fake) for by_fake in self._entries.values())

    def add(self, entity: str, replacement: str, original: str) -> None:
        self._entries.setdefault(entity, {}).setdefault(replacement, set()).add(original)

    def save(self, path: str | Path, secret: bytes) -> None:
        """Merge the collected pairs into the vault at ``path`` (created if absent), atomically."""
        path = Path(path)
        merged: dict[str, dict[str, list[str]]] = read_vault(path, secret) if path.exists() else {}
        for entity, by_fake in self._entries.items():
            target = merged.setdefault(entity, {})
            for fake, originals in by_fake.items():
                target[fake] = sorted(set(target.get(fake, [])) | originals)
        token = Fernet(vault_key(secret)).encrypt(json.dumps(merged, ensure_ascii=False, sort_keys=True).encode())
        with atomic_write(path, "wb", permissions=0o600) as fh:
            fh.write(token)
