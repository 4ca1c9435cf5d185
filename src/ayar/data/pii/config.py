"""What to detect and what to do with it: the entity types, their placeholders, and
:class:`RedactionConfig`, the typed settings a recipe's ``pii:`` section maps to.

The secret used by ``pseudonymize`` and ``hash`` is never part of this
configuration: only the *name* of the environment variable holding it, or the
path of a key file, is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Entity type -> placeholder written by the ``mask`` operator (and the label of ``hash``).
PLACEHOLDERS: dict[str, str] = {
    "TCKN": "TCKN",                  # T.C. Kimlik No
    "VKN": "VKN",                    # Vergi Kimlik No
    "IBAN": "IBAN",
    "CREDIT_CARD": "KART_NO",
    "PHONE_NUMBER": "TELEFON",
    "EMAIL_ADDRESS": "E_POSTA",
    "IP_ADDRESS": "IP_ADRESI",
    "LICENSE_PLATE": "PLAKA",
    "DATE_OF_BIRTH": "DOGUM_TARIHI",
    "ADDRESS": "ADRES",
    "PERSON": "AD_SOYAD",
    "SGK_NUMBER": "SGK_NO",          # social security registration number
    "PATIENT_ID": "HASTA_NO",        # patient protocol / file number
    "ICD10": "TANI_KODU",            # diagnosis code (KVKK art. 6 health data); off unless listed
}
ENTITIES: tuple[str, ...] = tuple(PLACEHOLDERS)
# Entity types detected only when listed in ``entities``: "E11" or "A12" are often product codes.
OPTIONAL_ENTITIES: tuple[str, ...] = ("ICD10",)
DEFAULT_ENTITIES: tuple[str, ...] = tuple(e for e in ENTITIES if e not in OPTIONAL_ENTITIES)

EntityName = Literal["TCKN", "VKN", "IBAN", "CREDIT_CARD", "PHONE_NUMBER", "EMAIL_ADDRESS", "IP_ADDRESS",
                     "LICENSE_PLATE", "DATE_OF_BIRTH", "ADDRESS", "PERSON", "SGK_NUMBER", "PATIENT_ID", "ICD10"]
OperatorName = Literal["mask", "pseudonymize", "hash", "drop_record"]
"""``mask``: "[TCKN]"; ``pseudonymize``: a consistent fake of the same kind; ``hash``:
"[TCKN:3fa9c2d1e0b4]" (keyed HMAC-SHA256); ``drop_record``: the whole record is left out."""

KEYED_OPERATORS = frozenset({"pseudonymize", "hash"})


class RedactionConfig(BaseModel):
    """Settings of PII redaction. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    entities: list[EntityName] = Field(default_factory=lambda: list(DEFAULT_ENTITIES), description=(
        "Entity types to detect; the others are left in the text. Default: all but ICD10 (diagnosis codes), "
        "which must be listed to be detected."))
    default_operator: OperatorName = Field("mask", description="Operator for entity types not in `operators`.")
    operators: dict[EntityName, OperatorName] = Field(default_factory=dict,
                                                      description="Operator per entity type, e.g. {PERSON: pseudonymize}.")
    secret_env: str = Field("AYAR_PII_SECRET", min_length=1,
                            description="Environment variable holding the secret for pseudonymize and hash.")
    secret_file: Path | None = Field(None, description="File holding the secret (read instead of secret_env).")
    hash_length: int = Field(12, ge=8, le=64, description="Hex characters kept from the HMAC by `hash`.")
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description=(
        "Minimum recognizer score to redact. Scores are tuned for 0.5: below 0.35 a VKN, an ungrouped "
        "card number or a date is redacted even without a context word."))
    vault_path: Path | None = Field(None, description="Encrypted file mapping fakes and hashes back to originals.")
    report_examples: int = Field(5, ge=0, le=50, description="Redacted example snippets kept in the report.")
    batch_size: int = Field(256, ge=1, le=100_000, description="Records analysed per batch.")

    @field_validator("entities")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("entities are listed more than once")
        return value

    def operator_for(self, entity: str) -> str:
        """The operator applied to ``entity``."""
        return self.operators.get(entity, self.default_operator)

    def needs_secret(self) -> bool:
        """True when some detected entity uses a keyed operator (pseudonymize, hash)."""
        return any(self.operator_for(e) in KEYED_OPERATORS for e in self.entities)
