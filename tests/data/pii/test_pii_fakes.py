"""Fakes pass their own checksums, are recognised by our recognizers and are reproducible."""

from __future__ import annotations

import ipaddress
import random

import pytest

from ayar.data.pii import fakes
from ayar.data.pii.checksums import iban_is_valid, luhn_is_valid, tckn_is_valid, vkn_is_valid
from ayar.data.pii.gazetteer import given_names, surnames
from ayar.data.pii.recognizers import national_phone_digits, parse_date

SEEDS = range(200)


def test_identifiers_pass_their_checksums():
    for seed in SEEDS:
        rng = random.Random(seed)
        assert tckn_is_valid(fakes.fake_tckn(rng))
        assert vkn_is_valid(fakes.fake_vkn(rng))
        assert iban_is_valid(fakes.fake_iban(rng))
        assert luhn_is_valid(fakes.fake_card(rng, rng.choice([13, 15, 16, 19]), rng.choice("3456")))


@pytest.mark.parametrize("country", ["TR", "DE", "GB", "FR", "NL", "NO", "MT"])
def test_iban_of_other_countries(country):
    iban = fakes.fake_iban(random.Random(1), country)
    assert iban.startswith(country) and iban_is_valid(iban) and iban_is_valid(fakes.group_iban(iban))


def test_phones_are_turkish_numbers_in_every_style():
    rng = random.Random(0)
    for kind in ("mobile", "landline", "service"):
        for style in fakes.PHONE_STYLES:
            national = fakes.fake_phone(rng, kind)
            assert national_phone_digits(fakes.fill_template(style, national)) == national
    assert national_phone_digits(fakes.fake_call_centre(rng)).startswith("444")


def test_other_fakes_look_right():
    rng = random.Random(3)
    for _ in range(50):
        assert fakes.fake_ipv4(rng).startswith(("192.0.2.", "198.51.100.", "203.0.113."))
        assert ipaddress.ip_address(fakes.fake_ipv6(rng)) in ipaddress.ip_network("2001:db8::/32")
        assert fakes.fake_email(rng).split("@")[1].endswith(("example.com", "example.org", "example.net"))
        code, letters, number = fakes.fake_plate(rng).split()
        assert 1 <= int(code) <= 81 and len(number) in {1: (4, 5), 2: (3, 4), 3: (2, 3)}[len(letters)]
        date = fakes.fake_birth_date(rng)
        assert parse_date(fakes.format_date(date, rng)) == date
        first, *_, last = fakes.fake_person(rng).split()
        assert first in given_names() and last in surnames()


def test_same_seed_same_values():
    def draw(seed):
        rng = random.Random(seed)
        return [fakes.fake_tckn(rng), fakes.fake_iban(rng), fakes.fake_person(rng), fakes.fake_address(rng)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_name_like_keeps_the_suffix_class():
    rng = random.Random(0)
    for word in ("Ayşe", "Mehmet", "Yılmaz", "Ufuk", "Öztürk", "Kaya"):
        fake = fakes.fake_name_like(rng, word, given_names() + surnames())
        assert fakes.harmony_class(fake) == fakes.harmony_class(word)
