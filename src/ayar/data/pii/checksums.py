"""Check-digit algorithms of the identifiers the PII recognizers look for.

Pure functions on strings: no I/O except the IBAN length table, read once
from the package data. Every ``*_is_valid`` accepts the value as written
(spaces and dashes are ignored where the format allows them) and returns a bool;
every ``*_check_digit(s)`` computes what a generator must append.
"""

from __future__ import annotations

from .gazetteer import iban_lengths


def _digits(value: str, separators: str = " -") -> str:
    for sep in separators:
        value = value.replace(sep, "")
    return value


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def tckn_check_digits(first_nine: str) -> str:
    """The 10th and 11th digits of a T.C. Kimlik No.

    10th = ((d1 + d3 + d5 + d7 + d9) * 7 - (d2 + d4 + d6 + d8)) mod 10,
    11th = (d1 + ... + d10) mod 10.
    """
    d = [int(c) for c in first_nine]
    tenth = (sum(d[0:9:2]) * 7 - sum(d[1:8:2])) % 10
    eleventh = (sum(d) + tenth) % 10
    return f"{tenth}{eleventh}"


def tckn_is_valid(value: str) -> bool:
    """True for an 11-digit T.C. Kimlik No whose first digit is not 0 and whose check digits match."""
    value = _digits(value)
    if len(value) != 11 or not _is_digits(value) or value[0] == "0":
        return False
    return value[9:] == tckn_check_digits(value[:9])


def vkn_check_digit(first_nine: str) -> str:
    """The 10th digit of a Vergi Kimlik No (Gelir İdaresi Başkanlığı algorithm).

    For digit d_i at position i = 1..9: t = (d_i + 10 - i) mod 10; a term is
    9 when t = 9, otherwise (t * 2^(10 - i)) mod 9. The check digit is
    (10 - (sum of terms mod 10)) mod 10.
    """
    total = 0
    for i, c in enumerate(first_nine, start=1):
        t = (int(c) + 10 - i) % 10
        total += 9 if t == 9 else (t * 2 ** (10 - i)) % 9
    return str((10 - total % 10) % 10)


def vkn_is_valid(value: str) -> bool:
    """True for a 10-digit Vergi Kimlik No whose check digit matches."""
    value = _digits(value)
    if len(value) != 10 or not _is_digits(value):
        return False
    return value[9] == vkn_check_digit(value[:9])


def _iban_remainder(compact: str) -> int:
    # Move the country code and check digits to the end, letters become 10..35, then mod 97.
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits of an IBAN for ``country`` (e.g. "TR") and its BBAN."""
    return f"{98 - _iban_remainder(country.upper() + '00' + bban.upper()):02d}"


def iban_is_valid(value: str) -> bool:
    """True when the IBAN has its country's length and passes the ISO 7064 mod-97 check."""
    compact = _digits(value).upper()
    if len(compact) < 5 or not compact.isalnum() or not compact.isascii():
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    if iban_lengths().get(compact[:2]) != len(compact):
        return False
    return _iban_remainder(compact) == 1


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit to append to ``payload`` (all digits but the last)."""
    total = 0
    for i, c in enumerate(reversed(payload)):
        d = int(c)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_is_valid(value: str) -> bool:
    """True when the digit string (spaces and dashes ignored) passes the Luhn check."""
    value = _digits(value)
    if len(value) < 2 or not _is_digits(value):
        return False
    return value[-1] == luhn_check_digit(value[:-1])
