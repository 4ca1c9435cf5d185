"""Fake Turkish personal data that looks and validates like the real thing.

Every generator takes a :class:`random.Random`, so the same seed gives the
same value: the demo data (``ayar.demo.tickets``) is reproducible and
pseudonymisation (``operators.py``) can seed a generator from an HMAC of the
real value. Identifiers pass their own checksums; IP addresses come from the
documentation ranges (RFC 5737, RFC 3849) and e-mails use ``example.com``
domains (RFC 2606), so a fake never points at a real machine or mailbox.
"""

from __future__ import annotations

import datetime
import random

from .checksums import iban_check_digits, luhn_check_digit, tckn_check_digits, vkn_check_digit
from .gazetteer import (
    MONTHS,
    PLATE_LETTERS,
    address_parts,
    given_names,
    iban_lengths,
    phone_prefixes,
    provinces,
    surnames,
    tr_lower,
)

_ASCII = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
# Ways people write a ten-digit national number; "#" is a digit.
PHONE_STYLES = ("0### ### ## ##", "+90 ### ### ## ##", "0 (###) ### ## ##", "###-###-####", "+90##########",
                "0###.###.##.##", "(###) ### ## ##", "0##########", "0090 ### ### ####")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def fill_template(template: str, digits: str) -> str:
    """Write ``digits`` into the ``#`` slots of ``template`` ("0### ###", "5321234") -> "0532 1234"."""
    it = iter(digits)
    return "".join(next(it) if c == "#" else c for c in template)


def fake_tckn(rng: random.Random) -> str:
    """An 11-digit T.C. Kimlik No with valid check digits."""
    first_nine = str(rng.randint(1, 9)) + _digits(rng, 8)
    return first_nine + tckn_check_digits(first_nine)


def fake_vkn(rng: random.Random) -> str:
    """A 10-digit Vergi Kimlik No with a valid check digit."""
    first_nine = _digits(rng, 9)
    return first_nine + vkn_check_digit(first_nine)


def fake_iban(rng: random.Random, country: str = "TR") -> str:
    """A compact IBAN of ``country`` with the right length and check digits (digits-only BBAN)."""
    length = iban_lengths()[country]
    bban = _digits(rng, 5) + "0" + _digits(rng, 16) if country == "TR" else _digits(rng, length - 4)
    return country + iban_check_digits(country, bban) + bban


def group_iban(compact: str) -> str:
    """"TR330006..." -> "TR33 0006 ..." (groups of four)."""
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


def fake_card(rng: random.Random, length: int = 16, prefix: str = "4") -> str:
    """A Luhn-valid card number of ``length`` digits starting with ``prefix``."""
    payload = prefix + _digits(rng, length - len(prefix) - 1)
    return payload + luhn_check_digit(payload)


def fake_phone(rng: random.Random, kind: str = "mobile") -> str:
    """A ten-digit national number: ``kind`` is "mobile", "landline" or "service" (0850...)."""
    prefix = rng.choice(sorted(phone_prefixes()[kind]))
    return f"{prefix}{rng.randint(2, 9)}{_digits(rng, 6)}"


def fake_call_centre(rng: random.Random) -> str:
    """A seven-digit 444 call-centre number."""
    return "444" + _digits(rng, 4)


def _ascii_lower(word: str) -> str:
    return tr_lower(word).translate(_ASCII).replace(" ", "")


def fake_email(rng: random.Random) -> str:
    """"ayse.yilmaz42@example.com"-style address on a reserved domain."""
    user = f"{_ascii_lower(rng.choice(given_names()))}.{_ascii_lower(rng.choice(surnames()))}"
    return f"{user}{rng.randint(1, 99)}@{rng.choice(_EMAIL_DOMAINS)}"


def fake_ipv4(rng: random.Random) -> str:
    """An IPv4 address from the documentation ranges 192.0.2/24, 198.51.100/24, 203.0.113/24."""
    return f"{rng.choice(('192.0.2', '198.51.100', '203.0.113'))}.{rng.randint(1, 254)}"


def fake_ipv6(rng: random.Random) -> str:
    """An IPv6 address in the documentation prefix 2001:db8::/32."""
    return "2001:db8:" + ":".join(f"{rng.randrange(0x10000):x}" for _ in range(6))


def fake_plate(rng: random.Random, letters: int | None = None, digits: int | None = None, spaced: bool = True) -> str:
    """A licence plate such as "34 ABC 123"; ``letters``/``digits`` fix the layout (1+4-5, 2+3-4, 3+2-3)."""
    letters = letters or rng.randint(1, 3)
    digits = digits or rng.choice({1: (4, 5), 2: (3, 4), 3: (2, 3)}[letters])
    code = f"{rng.randint(1, 81):02d}"
    text = "".join(rng.choice(PLATE_LETTERS) for _ in range(letters))
    number = str(rng.randint(1, 9)) + _digits(rng, digits - 1)
    return f"{code} {text} {number}" if spaced else f"{code}{text}{number}"


def fake_birth_date(rng: random.Random) -> datetime.date:
    """A birth date between 1950-01-01 and 2005-12-31."""
    start = datetime.date(1950, 1, 1).toordinal()
    return datetime.date.fromordinal(rng.randint(start, datetime.date(2005, 12, 31).toordinal()))


def format_date(date: datetime.date, rng: random.Random) -> str:
    """``date`` in one of the ways Turkish text writes it ("12.03.1985", "12 Mart 1985", ...)."""
    style = rng.randrange(4)
    if style == 0:
        return f"{date.day:02d}.{date.month:02d}.{date.year}"
    if style == 1:
        return f"{date.day:02d}/{date.month:02d}/{date.year}"
    if style == 2:
        return date.isoformat()
    return f"{date.day} {MONTHS[date.month - 1].capitalize()} {date.year}"


def fake_address(rng: random.Random) -> str:
    """"Cumhuriyet Mah. Lale Sk. No: 12 D: 5 Kadıköy/İstanbul"-style address."""
    parts = address_parts()
    province = rng.choice(sorted(parts["districts"]))
    return (f"{rng.choice(parts['street_names'])} {rng.choice(parts['neighbourhood_kinds'])} "
            f"{rng.choice(parts['street_names'])} {rng.choice(parts['street_kinds'])} "
            f"No: {rng.randint(1, 120)} D: {rng.randint(1, 30)} "
            f"{rng.choice(parts['districts'][province])}/{province}")


def fake_province(rng: random.Random) -> str:
    return provinces()[rng.randint(1, 81)]


# Turkish suffixes follow the last vowel and the last letter of the name they attach to
# ("Ayşe'nin", "Mehmet'in", "Ufuk'tan"). A fake keeps that class so the kept suffix still fits.
_VOWEL_CLASS = {"a": "ı", "ı": "ı", "e": "i", "i": "i", "o": "u", "u": "u", "ö": "ü", "ü": "ü"}
_VOICELESS = set("çfhkpsşt")


def harmony_class(word: str) -> tuple[str, str]:
    """(class of the last vowel, kind of ending) -- names with equal classes take the same suffixes."""
    low = tr_lower(word)
    vowel = next((_VOWEL_CLASS[c] for c in reversed(low) if c in _VOWEL_CLASS), "i")
    last = low[-1:] or "a"
    ending = "vowel" if last in _VOWEL_CLASS else ("voiceless" if last in _VOICELESS else "voiced")
    return vowel, ending


def fake_name_like(rng: random.Random, word: str, pool: tuple[str, ...]) -> str:
    """A name from ``pool`` in the same suffix class as ``word`` (any name if none matches)."""
    target = harmony_class(word)
    matching = [n for n in pool if harmony_class(n) == target]
    return rng.choice(matching or list(pool))


def fake_given_name(rng: random.Random) -> str:
    return rng.choice(given_names())


def fake_surname(rng: random.Random) -> str:
    return rng.choice(surnames())


def fake_person(rng: random.Random) -> str:
    """"Ayşe Yılmaz" (occasionally with a second given name)."""
    names = [fake_given_name(rng)] + ([fake_given_name(rng)] if rng.random() < 0.1 else [])
    return " ".join(names + [fake_surname(rng)])
