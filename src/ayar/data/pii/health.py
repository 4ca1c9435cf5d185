"""Health identifiers for hospital data: SGK numbers, patient protocol/file numbers, ICD-10 codes.

A diagnosis next to a name is health data, a special category under KVKK art. 6.
The numbers have no checksum and look like order or invoice numbers, so each
needs a context word ("SGK", "sicil", "protokol", "dosya no", "hasta no") within
the window of ``context.py``, before the number: they score 0.3 alone and 0.7 with one.

ICD-10 codes ("J45.9", "E11") are only looked for when ``ICD10`` is listed in
the ``entities`` of the pii configuration (it is not by default: most support
text has no diagnoses, and "E11" or "A12" are often product codes). A dotted
code ("J45.9") stands on its own; a bare one ("E11") needs a context word
("tanı", "teşhis", "ICD").
"""

from __future__ import annotations

from .recognizers import NUM_END, NUM_START, TurkishPatternRecognizer

# Digits with optional single spaces or dashes: "12345678", "1234 5678 90", "2-1234-01-01-1234567-034"
# (not dots or slashes: "24.07.2023" is a date).
_GROUPED_DIGITS = r"\d(?:[ \-]?\d){%d,%d}"


class SgkNumberRecognizer(TurkishPatternRecognizer):
    """SGK / SSK / Bağ-Kur registration numbers (7-13 digits, or a 26-digit workplace number,
    grouped or not); only with a context word ("SGK", "sigorta sicil", "Bağ-Kur")."""

    ENTITY = "SGK_NUMBER"
    CONTEXT_AFTER = False  # "kargo takip kodu 7399626302, SGK no ...": the word must come first
    PATTERNS = (("sgk_number", NUM_START + (_GROUPED_DIGITS % (6, 25)) + NUM_END, 0.3),)

    def invalidate_result(self, pattern_text: str) -> bool:
        digits = sum(c.isdigit() for c in pattern_text)
        return not (7 <= digits <= 13 or digits == 26)


class PatientIdRecognizer(TurkishPatternRecognizer):
    """Patient protocol, file and record numbers ("protokol no 2024/123456", "dosya no: H-48213",
    "hasta no 5561234"); only with a context word."""

    ENTITY = "PATIENT_ID"
    CONTEXT_AFTER = False
    PATTERNS = (("patient_id", r"(?<![\w/.-])(?:[A-Za-z]{1,3}[-/]?)?\d{4,12}(?:[-/]\d{1,8})?(?![\w/]|[.,]\d)",
                 0.3),)


class Icd10Recognizer(TurkishPatternRecognizer):
    """ICD-10 diagnosis codes: a letter, two digits and an optional dotted subcategory."""

    ENTITY = "ICD10"
    # "ı" and "İ": Turkish keyboards lower-case "I10" to "ı10".
    PATTERNS = (
        ("icd10_dotted", r"(?<![\w.])[A-Za-zıİ]\d{2}\.\d{1,2}[A-Za-z]?(?![\w]|\.\d)", 0.6),
        ("icd10_bare", r"(?<![\w.])[A-Za-zıİ]\d{2}(?![\w]|[.,]\d)", 0.3),
    )
