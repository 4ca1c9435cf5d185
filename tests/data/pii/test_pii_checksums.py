"""Check-digit algorithms against values checked by hand (derivations in the comments)."""

from __future__ import annotations

import pytest

from ayar.data.pii.checksums import (
    iban_check_digits,
    iban_is_valid,
    luhn_check_digit,
    luhn_is_valid,
    tckn_check_digits,
    tckn_is_valid,
    vkn_check_digit,
    vkn_is_valid,
)


def test_tckn_hand_checked():
    # 1 0 0 0 0 0 0 0 1: odd positions 1+0+0+0+1 = 2, even 0 -> 10th = (2*7 - 0) % 10 = 4,
    # 11th = (1+1+4) % 10 = 6.
    assert tckn_check_digits("100000001") == "46"
    assert tckn_is_valid("10000000146")
    # 1..9: odd 25, even 20 -> (175 - 20) % 10 = 5; (45 + 5) % 10 = 0.
    assert tckn_is_valid("12345678950")
    # odd 1+0+0+0+0 = 1, even 9*4 = 36 -> (7 - 36) % 10 = -29 % 10 = 1; (1+36+1) % 10 = 8.
    assert tckn_check_digits("190909090") == "18"


@pytest.mark.parametrize("value", [
    "12345678901",   # wrong check digits
    "10000000147",   # last digit off by one
    "10000000156",   # 10th digit off by one
    "01234567890",   # starts with 0
    "1000000014",    # 10 digits
    "100000001460",  # 12 digits
    "1000000014a",
    "１0000000146",  # a full-width digit is not an ASCII digit
])
def test_tckn_invalid(value):
    assert not tckn_is_valid(value)


def test_vkn_hand_checked():
    # 1234567890: every term t = (d_i + 10 - i) % 10 = 0, so the check digit is (10 - 0) % 10 = 0.
    assert vkn_check_digit("123456789") == "0"
    assert vkn_is_valid("1234567890")
    # 000000000: t = 9, 8, ..., 1 -> terms 9, 8*256%9=5, 7*128%9=5, 6*64%9=6, 5*32%9=7, 4*16%9=1,
    # 3*8%9=6, 2*4%9=8, 1*2%9=2; sum 49 -> (10 - 9) % 10 = 1.
    assert vkn_check_digit("000000000") == "1"
    assert vkn_is_valid("0000000001")


@pytest.mark.parametrize("value", ["1234567891", "0000000000", "123456789", "12345678901", "12345a7890"])
def test_vkn_invalid(value):
    assert not vkn_is_valid(value)


@pytest.mark.parametrize("value", [
    "TR33 0006 1005 1978 6457 8413 26",
    "TR330006100519786457841326",
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "gb82 west 1234 5698 7654 32",
])
def test_iban_valid(value):
    assert iban_is_valid(value)


@pytest.mark.parametrize("value", [
    "TR33 0006 1005 1978 6457 8413 27",  # mod 97 fails
    "TR33 0006 1005 1978 6457 8413 2",   # one character short for TR
    "DE89 3704 0044 0532 0130 00 0",     # one too long for DE
    "XX89 3704 0044 0532 0130 00",       # unknown country
    "TR3A 0006 1005 1978 6457 8413 26",
])
def test_iban_invalid(value):
    assert not iban_is_valid(value)


def test_iban_check_digits_rebuild_known_ibans():
    assert iban_check_digits("DE", "370400440532013000") == "89"
    assert iban_check_digits("TR", "0006100519786457841326") == "33"


def test_luhn():
    # The textbook example: 7992739871 -> check digit 3.
    assert luhn_check_digit("7992739871") == "3"
    assert luhn_is_valid("79927398713")
    assert not luhn_is_valid("79927398710")
    assert luhn_is_valid("4111 1111 1111 1111")
    assert luhn_is_valid("4111-1111-1111-1111")
    assert not luhn_is_valid("4111111111111112")
