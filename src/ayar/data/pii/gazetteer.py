"""Word lists and tables shipped with the PII package, and Turkish case helpers.

Everything here is loaded once from ``ayar/data/pii/data/`` and cached; the
files are plain text or YAML so that a data-protection officer can read and
extend them without touching code.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

_PACKAGE = "ayar.data.pii"

MONTHS = ("ocak", "şubat", "mart", "nisan", "mayıs", "haziran", "temmuz", "ağustos", "eylül", "ekim",
          "kasım", "aralık")
PLATE_LETTERS = "ABCDEFGHIJKLMNOPRSTUVYZ"  # no Ç Ğ İ Ö Ş Ü Q W X on Turkish plates

_TR_LOWER = str.maketrans({"I": "ı", "İ": "i"})
_TR_UPPER = str.maketrans({"i": "İ", "ı": "I"})


def tr_lower(text: str) -> str:
    """Lower-case with Turkish dotted/dotless i rules ("IĞDIR" -> "ığdır", "İZMİR" -> "izmir")."""
    return text.translate(_TR_LOWER).lower()


def tr_upper(text: str) -> str:
    """Upper-case with Turkish dotted/dotless i rules ("izmir" -> "İZMİR")."""
    return text.translate(_TR_UPPER).upper()


def tr_title(word: str) -> str:
    """Capitalise the first letter Turkish-style ("ilker" -> "İlker")."""
    return tr_upper(word[:1]) + tr_lower(word[1:]) if word else word


def _read_text(name: str) -> str:
    return resources.files(_PACKAGE).joinpath("data").joinpath(name).read_text(encoding="utf-8")


def _read_list(name: str) -> tuple[str, ...]:
    lines = (line.strip() for line in _read_text(name).splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))


def _read_yaml(name: str):
    return yaml.safe_load(_read_text(name))


@cache
def given_names() -> tuple[str, ...]:
    """Common Turkish given names, as written (capitalised)."""
    return _read_list("given_names.txt")


@cache
def surnames() -> tuple[str, ...]:
    """Common Turkish surnames, as written (capitalised)."""
    return _read_list("surnames.txt")


@cache
def common_given_name_keys() -> frozenset[str]:
    """The common given names of ``given_names.txt`` (the pseudonymiser's pool), Turkish lower case."""
    return frozenset(tr_lower(n) for n in given_names())


@cache
def given_name_keys() -> frozenset[str]:
    """Every known given name: the common ones and the bundled gazetteer (thousands), lower case."""
    files = ("gazetteer_given_names.txt", "modern_given_names.txt")
    return common_given_name_keys() | frozenset(tr_lower(n) for f in files for n in _read_list(f))


@cache
def surname_keys() -> frozenset[str]:
    """Every known surname: ``surnames.txt`` and the bundled gazetteer (thousands), lower case."""
    return frozenset(tr_lower(n) for n in surnames() + _read_list("gazetteer_surnames.txt"))


@cache
def ambiguous_given_name_keys() -> frozenset[str]:
    """Given names that are also ordinary words ("Umut" = hope, "Deniz" = sea), hand-picked."""
    return frozenset(tr_lower(n) for n in _read_list("ambiguous_given_names.txt"))


@cache
def name_word_keys() -> frozenset[str]:
    """Given names and surnames that are also Turkish words or word forms ("deniz", "kaya",
    "yaşar" = lives): the hand-picked list plus those the gazetteer build found in a lexicon."""
    return ambiguous_given_name_keys() | frozenset(_read_list("gazetteer_name_words.txt"))


@cache
def name_rules() -> dict[str, frozenset[str]]:
    """``titles_before``, ``titles_after``, ``stopwords``, ``org_markers`` (Turkish lower case)."""
    raw = _read_yaml("name_rules.yaml")
    return {key: frozenset(tr_lower(str(w)) for w in words) for key, words in raw.items()}


@cache
def context_words() -> dict[str, tuple[str, ...]]:
    """Context words per entity type, Turkish lower case."""
    raw = _read_yaml("context_words.yaml")
    return {entity: tuple(tr_lower(str(w)) for w in words) for entity, words in raw.items()}


@cache
def provinces() -> dict[int, str]:
    """Province code (1-81) -> province name."""
    return {int(code): str(name) for code, name in _read_yaml("provinces.yaml").items()}


@cache
def phone_prefixes() -> dict[str, frozenset[int]]:
    """``mobile``, ``landline`` and ``service`` three-digit prefixes of national numbers."""
    return {kind: frozenset(int(p) for p in codes) for kind, codes in _read_yaml("phone_prefixes.yaml").items()}


@cache
def iban_lengths() -> dict[str, int]:
    """Country code -> IBAN length (ISO 13616)."""
    return {str(cc): int(n) for cc, n in _read_yaml("iban_lengths.yaml").items()}


@cache
def address_parts() -> dict:
    """Street names, street/neighbourhood kinds and districts per province, for fake addresses."""
    return _read_yaml("addresses.yaml")
