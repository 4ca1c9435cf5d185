"""Pattern recognizers for Turkish identifiers, built on Presidio's ``PatternRecognizer``.

Each recognizer is a regex (one or more ``Pattern``s with a base score), a
check on the matched text (``invalidate_result``: a failed checksum or an
impossible value drops the match) and Turkish context words from
``data/context_words.yaml``. Scores are chosen against the analyzer's threshold
(0.5 by default, see ``engine.py``):

- at or above 0.5: reported on its own (a checksum-valid TCKN, a grouped card);
- below 0.5: reported only when a context word lifts it by +0.4 (a VKN, an
  ungrouped card number, a date of birth, an unformatted 10-digit phone number).

Person names and street addresses need more than one regex: see ``names.py``
and ``address.py``; ``engine.turkish_recognizers`` returns the full set.
"""

from __future__ import annotations

import datetime
import ipaddress

import regex as re
from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult

from .checksums import iban_is_valid, luhn_is_valid, tckn_is_valid, vkn_is_valid
from .gazetteer import MONTHS, PLATE_LETTERS, context_words, iban_lengths, phone_prefixes, tr_lower

LANGUAGE = "tr"
CASE_SENSITIVE = re.DOTALL | re.MULTILINE

# A number must not continue another number or word: "1.250.000", "ABC123", "12345678901234".
NUM_START = r"(?<!\w)(?<!\d[.,])"
NUM_END = r"(?!\w)(?![.,]\d)"


class TurkishPatternRecognizer(PatternRecognizer):
    """A ``PatternRecognizer`` for Turkish text, configured by class attributes.

    Subclasses set ``ENTITY``, ``PATTERNS`` as ``(name, regex, score)`` (or override
    ``pattern_specs()`` when the regex is built from data) and optionally ``FLAGS``, and
    override ``invalidate_result`` with their check.
    """

    ENTITY: str = ""
    PATTERNS: tuple[tuple[str, str, float], ...] = ()
    FLAGS: int = CASE_SENSITIVE

    def __init__(self) -> None:
        super().__init__(
            supported_entity=self.ENTITY,
            name=type(self).__name__,
            supported_language=LANGUAGE,
            patterns=[Pattern(name, regex, score) for name, regex, score in self.pattern_specs()],
            context=list(context_words().get(self.ENTITY, ())),
            global_regex_flags=self.FLAGS,
        )

    @classmethod
    def pattern_specs(cls) -> tuple[tuple[str, str, float], ...]:
        return cls.PATTERNS


class TcknRecognizer(TurkishPatternRecognizer):
    """T.C. Kimlik No: 11 digits, first not 0, two check digits (see ``checksums.tckn_is_valid``);
    also written in groups ("123 456 789 50", "123.456.789.50")."""

    ENTITY = "TCKN"
    PATTERNS = (
        ("tckn", NUM_START + r"[1-9]\d{10}" + NUM_END, 0.75),
        ("tckn_grouped", NUM_START + r"[1-9]\d{1,3}(?:[ .]\d{2,4}){2,4}" + NUM_END, 0.75),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        return not tckn_is_valid(pattern_text.replace(".", "").replace(" ", ""))


class VknRecognizer(TurkishPatternRecognizer):
    """Vergi Kimlik No: 10 digits with a check digit; needs a context word ("vergi", "VKN")."""

    ENTITY = "VKN"
    PATTERNS = (("vkn", NUM_START + r"\d{10}" + NUM_END, 0.3),)

    def invalidate_result(self, pattern_text: str) -> bool:
        return not vkn_is_valid(pattern_text)


# An IBAN starts with a country code and two check digits, in any case, with any spacing:
# "TR33 0006 ...", "tr33 0006 ...", "TR 33 0006...". The rest is collected by _iban_span.
_IBAN_START = re.compile(r"(?<![\p{L}\p{N}])([A-Za-z]{2})[ ]{0,2}(\d{2})")
_IBAN_SEPARATORS = " -\u00a0"


def _iban_span(text: str, match: re.Match, length: int) -> int | None:
    """End of the IBAN starting at ``match`` when ``length`` characters can be collected.

    Letters and digits are collected with up to two separators (space, dash) between them; the
    character after the last one collected must not be a letter or digit ("...8413 26'ya" ok).
    """
    count, i, gap = 4, match.end(), 0
    while count < length and i < len(text):
        c = text[i]
        if c.isascii() and c.isalnum():
            count, gap = count + 1, 0
        elif c in _IBAN_SEPARATORS and gap < 2:
            gap += 1
        else:
            return None
        i += 1
    if count < length or (i < len(text) and text[i].isalnum()):
        return None
    return i


class IbanRecognizer(TurkishPatternRecognizer):
    """IBAN of any registered country (TR: 26 characters), mod-97 checked, in any letter case and
    with irregular spacing ("tr79 8099 2051 ...", "TR 33 0006 1005 ...")."""

    ENTITY = "IBAN"
    SCORE = 0.8
    PATTERNS = (("iban_start", _IBAN_START.pattern, SCORE),)  # Presidio requires one; analyze() is custom

    def analyze(self, text: str, entities: list[str], nlp_artifacts=None, regex_flags=None):
        """Return IBAN results for ``text`` (a country-code scan, then the length and mod-97 check)."""
        results = []
        lengths = iban_lengths()
        for match in _IBAN_START.finditer(text):
            length = lengths.get(match.group(1).upper())
            end = _iban_span(text, match, length) if length else None
            if end is not None and iban_is_valid(re.sub(r"[\s\u00a0-]", "", text[match.start():end])):
                results.append(RecognizerResult(
                    entity_type=self.ENTITY, start=match.start(), end=end, score=self.SCORE,
                    recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                          RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return results


def _plausible_card_prefix(digits: str) -> bool:
    # Visa 4, Mastercard 2/5, Amex 3, Discover/Troy 6, Troy 9792.
    return digits[0] in "23456" or digits.startswith("9792")


class CreditCardRecognizer(TurkishPatternRecognizer):
    """Payment card: 13-19 digits passing Luhn. Grouped as 4-4-4-4(-3) or 4-6-5 it stands
    on its own; an ungrouped digit run needs a context word ("kart", "kredi", "visa")."""

    ENTITY = "CREDIT_CARD"
    PATTERNS = (
        ("card_grouped", r"(?<![\d-])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{5})"
                         r"(?!\d|[-.,]\d)", 0.6),
        ("card_ungrouped", NUM_START + r"\d{13,19}" + NUM_END, 0.3),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        digits = re.sub(r"\D", "", pattern_text)
        return not (luhn_is_valid(digits) and _plausible_card_prefix(digits))


_SEP = r"[ .\-]?"
_AREA = r"(?:\(\s?0?\s?\d{3}\s?\)|\d{3})"
_LOCAL = rf"{_SEP}\d{{3}}{_SEP}\d{{2}}{_SEP}\d{{2}}"
_PHONE_START = r"(?<![\w+])(?<!\d[.,])"


def national_phone_digits(text: str) -> str | None:
    """The national digits of a Turkish phone number as written, or None if it is not one.

    "+90 (532) 123 45 67" -> "5321234567"; "444 0 123" -> "4440123".
    """
    digits = re.sub(r"\D", "", text)
    if len(digits) == 7:
        return digits if digits.startswith("444") else None
    national, prefix = digits[-10:], digits[:-10]
    if len(national) != 10 or prefix not in ("", "0", "90", "0090"):
        return None
    area = int(national[:3])
    prefixes = phone_prefixes()
    if 500 <= area <= 569 or area in prefixes["landline"] or area in prefixes["service"]:
        return national
    return None


class PhoneRecognizer(TurkishPatternRecognizer):
    """Turkish phone numbers: mobile 5xx and landline 2xx/3xx/4xx area codes (checked against
    the real list), with +90 / 0090 / 0 / no prefix, separated by spaces, dashes, dots or
    parentheses; and 444 XX XX call-centre numbers. A bare 10-digit run needs a context word."""

    ENTITY = "PHONE_NUMBER"
    PATTERNS = (
        ("phone_international", _PHONE_START + r"(?:\+|00)\s?90" + _SEP + _AREA + _LOCAL + NUM_END, 0.8),
        ("phone_trunk", _PHONE_START + r"0" + _SEP + _AREA + _LOCAL + NUM_END, 0.7),
        ("phone_grouped", _PHONE_START + r"(?:\(\s?0?\s?\d{3}\s?\)\s?|\d{3}[ .\-])\d{3}" + _SEP + r"\d{2}"
         + _SEP + r"\d{2}" + NUM_END, 0.6),
        ("phone_bare", _PHONE_START + r"\d{10}" + NUM_END, 0.35),
        ("phone_444", _PHONE_START + r"444" + _SEP + r"(?:\d{2}" + _SEP + r"\d{2}|\d" + _SEP + r"\d{3})"
         + NUM_END, 0.6),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        return national_phone_digits(pattern_text) is None


class EmailRecognizer(TurkishPatternRecognizer):
    """E-mail addresses (the local part may hold Turkish letters)."""

    ENTITY = "EMAIL_ADDRESS"
    PATTERNS = ((
        "email",
        r"(?<![\w.%+-])[\w%+-](?:[\w.%+-]*[\w%+-])?@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
        r"[A-Za-z]{2,24}(?![\w-])",
        0.9,
    ),)

    def invalidate_result(self, pattern_text: str) -> bool:
        return ".." in pattern_text


class IpAddressRecognizer(TurkishPatternRecognizer):
    """IPv4 and IPv6 addresses, checked with :mod:`ipaddress`."""

    ENTITY = "IP_ADDRESS"
    PATTERNS = (
        ("ipv4", r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                 r"(?!\w|\.\d)", 0.6),
        ("ipv6", r"(?<![\w:])[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}(?![\w:])", 0.6),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        try:
            ipaddress.ip_address(pattern_text)
        except ValueError:
            return True
        return sum(c.isalnum() for c in pattern_text) < 2  # "::" alone


# Letter groups that are usually units or currencies ("10 GB 500 MB", "12 TL 500"): a plate
# with them needs a context word ("plaka", "araç").
_PLATE_UNIT_LETTERS = ("TL", "GB", "MB", "KB", "TB", "KG", "KM", "CM", "MM", "ML", "GR", "LT", "USD", "EUR",
                       "KDV", "TRY")
_PLATE_LAYOUTS = {1: (4, 5), 2: (3, 4), 3: (2, 3)}  # letters -> allowed digit counts


class LicensePlateRecognizer(TurkishPatternRecognizer):
    """Turkish licence plates: province 01-81, then 1 letter + 4-5 digits, 2 letters + 3-4
    digits or 3 letters + 2-3 digits, upper case, from the plate alphabet ("34 ABC 123")."""

    ENTITY = "LICENSE_PLATE"
    # Loose regexes (fast); the province and the layout are checked in invalidate_result.
    _UNITS = "|".join(_PLATE_UNIT_LETTERS)
    PATTERNS = (
        ("plate", rf"(?<![\w.,])\d\d ?(?!(?:{_UNITS}) ?\d)[{PLATE_LETTERS}]{{1,3}} ?\d{{2,5}}(?!\w)", 0.6),
        ("plate_unit_letters", rf"(?<![\w.,])\d\d ?(?:{_UNITS}) ?\d{{2,5}}(?!\w)", 0.3),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        compact = pattern_text.replace(" ", "")
        letters = "".join(c for c in compact if c.isalpha())
        digits = len(compact) - 2 - len(letters)
        return not 1 <= int(compact[:2]) <= 81 or digits not in _PLATE_LAYOUTS.get(len(letters), ())


_ASCII = str.maketrans("şığüöçŞİĞÜÖÇ", "siguocSIGUOC")
# "mart" -> 3, and the same without Turkish letters ("subat", "agustos") as typed on some keyboards.
_MONTH_NUMBER = {name: i for i, month in enumerate(MONTHS, 1) for name in (month, month.translate(_ASCII))}
_DATE_START = r"(?<![\w.,/-])"
_DATE_END = r"(?!\w|[./-]\d)"


def parse_date(text: str) -> datetime.date | None:
    """Read "12.03.1985", "12/3/85", "1985-03-12" or "12 Mart 1985"; None if impossible."""
    parts = re.findall(r"\d+|[^\W\d_]+", text)
    if len(parts) != 3:
        return None
    if len(parts[0]) == 4:  # ISO year-month-day
        parts = [parts[2], parts[1], parts[0]]
    day, month, year = parts
    month_number = int(month) if month.isdigit() else _MONTH_NUMBER.get(tr_lower(month))
    if month_number is None:
        return None
    year_number = int(year)
    if len(year) == 2:
        year_number += 1900 if year_number > datetime.date.today().year % 100 else 2000
    try:
        return datetime.date(year_number, month_number, int(day))
    except ValueError:
        return None


class DateOfBirthRecognizer(TurkishPatternRecognizer):
    """Dates ("12.03.1985", "1985-03-12", "12 Mart 1985") that are possible birth dates;
    only reported with a birth context word ("doğum tarihi", "d.t.", "doğumlu")."""

    ENTITY = "DATE_OF_BIRTH"
    # Loose regexes (fast); parse_date checks the day, the month (number or name) and the year.
    PATTERNS = (
        ("date_numeric", _DATE_START + r"\d{1,2}([./-])\d{1,2}\1\d{2}(?:\d{2})?" + _DATE_END, 0.25),
        ("date_iso", _DATE_START + r"(?:19|20)\d{2}-\d{2}-\d{2}" + _DATE_END, 0.25),
        ("date_text", r"(?<!\w)\d{1,2}\s+\p{L}{3,8}\s+(?:19|20)\d{2}(?!\w)", 0.25),
    )

    def invalidate_result(self, pattern_text: str) -> bool:
        date = parse_date(pattern_text)
        return date is None or not (1900 <= date.year and date <= datetime.date.today())
