"""Turkish-aware detection and redaction of personal data (KVKK), on Presidio.

Typical use::

    from ayar.data.pii import Redactor, RedactionConfig

    redactor = Redactor(RedactionConfig(operators={"PERSON": "pseudonymize"}))
    text, findings = redactor.redact_text("Ayşe'nin T.C. kimlik no 10000000146")
    # -> "Emine'nin T.C. kimlik no [TCKN]"  (the fake name depends on the secret)

Entity types and their ``mask`` placeholders are listed in ``config.PLACEHOLDERS``;
files are redacted with :func:`redact_jsonl`.

Importing Presidio takes seconds (it imports ``transformers`` when installed), so
the names below are imported on first use: ``import ayar.data.pii.fakes`` or
``checksums`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Public name -> submodule that defines it.
_EXPORTS = {
    "ENTITIES": "config",
    "PLACEHOLDERS": "config",
    "RedactionConfig": "config",
    "Finding": "engine",
    "RedactedRecord": "engine",
    "Redactor": "engine",
    "build_analyzer": "engine",
    "turkish_recognizers": "engine",
    "redact_jsonl": "redact_file",
    "read_vault": "vault",
}
__all__ = ["ENTITIES", "PLACEHOLDERS", "Finding", "RedactedRecord", "RedactionConfig", "Redactor", "build_analyzer",
           "read_vault", "redact_jsonl", "turkish_recognizers"]

if TYPE_CHECKING:
    from .config import ENTITIES, PLACEHOLDERS, RedactionConfig
    from .engine import Finding, RedactedRecord, Redactor, build_analyzer, turkish_recognizers
    from .redact_file import redact_jsonl
    from .vault import read_vault


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
