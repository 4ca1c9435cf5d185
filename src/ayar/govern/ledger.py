"""The workspace audit ledger: one append-only JSONL file, each entry hash-chained to the one before.

An entry is a JSON object on one line::

    {"seq": 7, "time": "2026-01-31T09:15:02Z", "event": "train", "prev": "<hash of entry 6>",
     "data": {...}, "inputs": {label: {"path", "sha256"}}, "outputs": {...},
     "hash": "<sha256 of the canonical JSON of every other field>", "sig": "...", "signer": "..."}

- ``hash`` is sha256 over the canonical serialisation (keys sorted, no spaces, UTF-8, no NaN) of
  the entry without ``hash``, ``sig`` and ``signer``; ``prev`` is the previous entry's hash (64 zeros
  for the first). Editing, deleting or reordering an entry breaks a hash or a link.
- ``<ledger>.head`` holds the last entry's number and hash, rewritten with every append, so a
  ledger cut short at the end (which leaves a valid chain) is detected too.
- Appends run under an exclusive ``fcntl.flock`` on ``<ledger>.lock``: the last entry is read and
  the new line written while the lock is held, so concurrent processes can neither interleave
  lines nor fork the chain. The line is written with one ``write`` on an ``O_APPEND`` descriptor
  and fsynced before the lock is released.
- With an Ed25519 private key (PEM file named by ``$AYAR_LEDGER_KEY``, kept outside the recipe),
  every entry and the head carry a signature of the entry hash; someone who rewrites the whole
  chain cannot re-sign it without the key (``ayar audit verify --public-key``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.fsutil import atomic_write
from ayar.paths import ayar_home

LEDGER_VERSION = 1
GENESIS = "0" * 64
KEY_ENV = "AYAR_LEDGER_KEY"  # path of the Ed25519 private key (PEM) that signs entries
LEDGER_ENV = "AYAR_LEDGER"  # ledger file used when a recipe names none
UNHASHED = ("hash", "sig", "signer")


def default_ledger_path() -> Path:
    """``$AYAR_LEDGER``, else ``$AYAR_HOME/ledger.jsonl``."""
    configured = os.environ.get(LEDGER_ENV)
    return Path(configured).expanduser() if configured else ayar_home() / "ledger.jsonl"


def canonical(obj: Any) -> bytes:
    """The canonical serialisation hashed and signed: sorted keys, no spaces, UTF-8, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of ``entry`` without ``hash``, ``sig`` and ``signer``."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k not in UNHASHED})).hexdigest()


# ----------------------------------------------------------------------------- signing keys


def load_private_key(path: str | Path):
    """An Ed25519 private key from a PEM file (unencrypted PKCS#8).

    Raises:
        AyarError: unreadable file or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(Path(path).expanduser().read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise AyarError(f"{path}: cannot read the ledger signing key ({exc}); create one with "
                        "`ayar audit keygen KEYFILE`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AyarError(f"{path}: the ledger signing key must be an Ed25519 key")
    return key


def load_public_key(path: str | Path):
    """An Ed25519 public key from a PEM file.

    Raises:
        AyarError: unreadable file or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(Path(path).expanduser().read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise AyarError(f"{path}: cannot read the public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AyarError(f"{path}: not an Ed25519 public key")
    return key


def fingerprint(public_key) -> str:
    """sha256 (hex, first 16 characters) of the raw 32-byte public key: names the signer in entries."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def generate_key(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (mode 0600) to ``path`` and its public key to ``path.pub``.

    Raises:
        AyarError: ``path`` exists already.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    path = Path(path)
    public = path.with_name(path.name + ".pub")
    if path.exists() or public.exists():
        raise AyarError(f"{path}: exists already; choose another file (a key is never overwritten)")
    key = Ed25519PrivateKey.generate()
    with atomic_write(path, "wb", permissions=0o600) as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with atomic_write(public, "wb") as fh:
        fh.write(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path, public


def signing_key_from_env():
    """The private key named by ``$AYAR_LEDGER_KEY``, or None when it is unset."""
    path = os.environ.get(KEY_ENV)
    return load_private_key(path) if path else None


# ----------------------------------------------------------------------------- the ledger


@dataclass
class Ledger:
    """An append-only, hash-chained JSONL ledger at ``path``.

    Args:
        path: the ledger file (created with its folder on the first append).
        key: an Ed25519 private key that signs each entry, or None.
    """

    path: Path
    key: Any = None

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def store(self) -> Path:
        """Folder of files the ledger keeps copies of (subject indexes), named by their sha256."""
        return self.path.with_name(self.path.stem + ".d")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive lock on ``<ledger>.lock`` (blocks until other writers are done)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, event: str, data: dict[str, Any], *, inputs: dict[str, dict] | None = None,
               outputs: dict[str, dict] | None = None, time: str | None = None) -> dict[str, Any]:
        """Append one entry and return it (with its ``seq`` and ``hash``).

        Args:
            event: what happened (``prepare``, ``train``, ``eval``, ``export``, ``serve_load``, ...).
            data: facts about it; JSON only, never personal data.
            inputs, outputs: ``{label: {"path": ..., "sha256": ...}}`` of files read and written;
                ``ayar audit verify`` re-hashes them, ``lineage`` links entries through them.

        Raises:
            AyarError: the ledger's last line is not a valid entry (repair it before appending),
                or the ledger cannot be written.
        """
        from ayar.govern.manifest import utc_now

        with self.locked():
            last = self._last_entry()
            entry = {"v": LEDGER_VERSION, "seq": last["seq"] + 1 if last else 0, "time": time or utc_now(),
                     "event": event, "prev": last["hash"] if last else GENESIS, "data": data,
                     "inputs": inputs or {}, "outputs": outputs or {}}
            entry["hash"] = entry_hash(entry)
            if self.key is not None:
                entry["sig"] = base64.b64encode(self.key.sign(bytes.fromhex(entry["hash"]))).decode()
                entry["signer"] = fingerprint(self.key.public_key())
            line = json.dumps(entry, ensure_ascii=False, allow_nan=False, sort_keys=True) + "\n"
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode("utf-8"))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._write_head(entry)
            except OSError as exc:
                raise AyarError(f"{self.path}: cannot write the audit ledger ({exc.strerror})") from None
        return entry

    def _last_entry(self) -> dict[str, Any] | None:
        """The last line as an entry (read backwards from the end: constant time in the ledger's size)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            block, tail = 4096, b""
            while end > 0 and tail.count(b"\n") < 2:
                start = max(0, end - block)
                fh.seek(start)
                tail = fh.read(end - start) + tail
                end = start
        lines = tail.rstrip(b"\n").split(b"\n")
        try:
            entry = json.loads(lines[-1])
            if tail.endswith(b"\n") and entry.get("hash") == entry_hash(entry):
                return entry
        except (ValueError, AttributeError):
            pass
        raise AyarError(f"{self.path}: the last line is not a complete ledger entry; run `ayar audit verify` and "
                        "restore the ledger from a backup before recording anything else")

    def _write_head(self, entry: dict[str, Any]) -> None:
        head = {"seq": entry["seq"], "hash": entry["hash"]}
        if self.key is not None:
            head["sig"] = base64.b64encode(self.key.sign(canonical(head))).decode()
        with atomic_write(self.head_path) as fh:
            fh.write(json.dumps(head) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, in file order (lines that are not JSON objects are skipped; verify reports them)."""
        return [e for _, e in self.lines() if isinstance(e, dict)]

    def lines(self) -> list[tuple[int, Any]]:
        """``(line number, parsed JSON or None)`` of every non-empty line."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    out.append((number, json.loads(line)))
                except json.JSONDecodeError:
                    out.append((number, None))
        return out

    def keep(self, source: Path, sha256: str) -> Path:
        """Copy ``source`` (whose sha256 is ``sha256``) into the ledger's store; returns the copy's path."""
        target = self.store / f"{sha256}{source.suffix}"
        if not target.is_file():
            with atomic_write(target, "wb", permissions=0o600) as fh:
                fh.write(source.read_bytes())
        return target


def ref(path: str | Path, sha256: str | None = None) -> dict[str, str]:
    """``{"path": absolute path, "sha256": ...}`` of one file (hashed now unless ``sha256`` is given)."""
    from ayar.govern.manifest import sha256_file

    path = Path(path).resolve()
    return {"path": str(path), "sha256": sha256 or sha256_file(path)}


def folder_refs(folder: str | Path, prefix: str = "", files: dict[str, Any] | None = None) -> dict[str, dict]:
    """``{prefix + relative path: ref}`` of the files under ``folder`` (hidden files skipped).

    ``files`` reuses hashes already computed, as ``{relative path: {"sha256": ...}}`` (a manifest's).
    """
    from ayar.govern.manifest import describe_folder

    root = Path(folder).resolve()
    described = files if files is not None else describe_folder(root)
    return {f"{prefix}{rel}": {"path": str(root / rel), "sha256": rec["sha256"]} for rel, rec in described.items()}


# ----------------------------------------------------------------------------- verification


@dataclass
class Verification:
    """What ``ayar audit verify`` found. ``problems`` is empty for an intact ledger."""

    path: Path
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    files_missing: int = 0
    files_superseded: int = 0
    signed: int = 0
    signers: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(ledger: Ledger, *, check_files: bool = True, public_key=None) -> Verification:
    """Check the chain, the head, every signature (with ``public_key``) and every referenced file still present.

    A referenced file is compared with the *latest* entry that references its path: a file that a
    later recorded stage replaced (a re-prepared dataset, a retrained run) is superseded, not changed.

    Returns:
        A :class:`Verification`; each problem names the entry (its ``seq`` and line) and what is wrong.
    """
    report = Verification(ledger.path)
    if not ledger.path.is_file():
        report.problems.append(f"{ledger.path}: no ledger (nothing has been recorded here yet)")
        return report
    prev_hash, expected_seq = GENESIS, 0
    latest: dict[str, tuple[int, str]] = {}  # path -> (seq, sha256) of the last entry naming it
    for number, entry in ledger.lines():
        where = f"line {number}"
        if not isinstance(entry, dict) or "hash" not in entry:
            report.problems.append(f"{where}: not a ledger entry (cut short or edited); the chain cannot be "
                                   "checked past it")
            return report
        seq = entry.get("seq")
        where = f"entry {seq} (line {number})"
        if entry_hash(entry) != entry["hash"]:
            report.problems.append(f"{where}: content changed after it was recorded (its hash no longer matches)")
        if seq != expected_seq:
            kind = "missing or reordered entries" if isinstance(seq, int) and seq > expected_seq else "reordered"
            report.problems.append(f"{where}: expected entry {expected_seq} here ({kind})")
        if entry.get("prev") != prev_hash:
            report.problems.append(f"{where}: does not follow the entry before it (an entry was deleted, "
                                   "inserted or moved)")
        _check_signature(entry, where, public_key, report)
        for group in ("inputs", "outputs"):
            for item in (entry.get(group) or {}).values():
                if isinstance(item, dict) and item.get("path") and item.get("sha256"):
                    before = latest.get(item["path"])
                    report.files_superseded += before is not None and before[1] != item["sha256"]
                    latest[item["path"]] = (entry.get("seq"), item["sha256"])
        prev_hash = entry["hash"]
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
        report.entries += 1
        if report.problems:
            return report
    _check_head(ledger, prev_hash, expected_seq - 1, public_key, report)
    if check_files:
        _check_files(latest, report)
    return report


def _check_signature(entry: dict, where: str, public_key, report: Verification) -> None:
    if "sig" not in entry:
        if public_key is not None:
            report.problems.append(f"{where}: not signed, but a public key was given")
        return
    report.signed += 1
    report.signers.add(entry.get("signer", "?"))
    if public_key is None:
        return
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(base64.b64decode(entry["sig"]), bytes.fromhex(entry["hash"]))
    except (InvalidSignature, ValueError):
        report.problems.append(f"{where}: the signature does not match the key given (forged or re-signed)")


def _check_head(ledger: Ledger, last_hash: str, last_seq: int, public_key, report: Verification) -> None:
    try:
        head = json.loads(ledger.head_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report.problems.append(f"{ledger.head_path}: missing or unreadable; cannot tell whether the ledger was "
                               "cut short")
        return
    if head.get("seq") != last_seq or head.get("hash") != last_hash:
        report.problems.append(f"the ledger ends at entry {last_seq}, but its head records entry {head.get('seq')} "
                               f"(hash {str(head.get('hash'))[:12]}): entries were removed from the end, or the "
                               "head was edited")
    elif public_key is not None:
        from cryptography.exceptions import InvalidSignature

        try:
            public_key.verify(base64.b64decode(head.get("sig", "")), canonical({"seq": head["seq"],
                                                                                "hash": head["hash"]}))
        except (InvalidSignature, ValueError):
            report.problems.append(f"{ledger.head_path}: the head's signature does not match the key given")


def _check_files(latest: dict[str, tuple[int, str]], report: Verification) -> None:
    from ayar.govern.manifest import sha256_file

    for path, (seq, recorded) in sorted(latest.items()):
        file = Path(path)
        if not file.is_file():
            report.files_missing += 1
            continue
        report.files_checked += 1
        now = sha256_file(file)
        if now != recorded:
            report.problems.append(f"entry {seq}: {path} changed since it was recorded (sha256 {recorded[:12]}... "
                                   f"recorded, {now[:12]}... now)")
