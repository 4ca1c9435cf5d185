"""What replaces a detected value: ``mask``, ``hash`` and ``pseudonymize``.

``pseudonymize`` seeds a random generator with HMAC-SHA256(secret, entity type,
normalised value), so one real value always maps to the same fake, across
records, files and runs, as long as the secret is the same; another secret
gives other fakes. The fake keeps the kind and the shape of the value: a fake
TCKN/VKN/IBAN/card passes its checksum, a phone number keeps its prefix and
spacing, a name keeps its casing and the suffix class of its last letter.

``hash`` writes "[LABEL:hex]" with a truncated HMAC-SHA256, keyed for a
different purpose than pseudonyms, so a hash does not reveal the pseudonym seed.
Both work on a normalised value: "0532 123 45 67" and "+905321234567" are one
number, "12.03.1985" and "1985-03-12" one date.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import random
from collections.abc import Callable
from pathlib import Path

import regex as re

from ...errors import AyarError
from . import fakes
from .config import PLACEHOLDERS, RedactionConfig
from .gazetteer import MONTHS, given_name_keys, given_names, surnames, tr_lower, tr_upper
from .recognizers import national_phone_digits, parse_date

MIN_SECRET_LENGTH = 16
_SECRET_HINT = "e.g. export {env}=$(python -c 'import secrets; print(secrets.token_hex(32))')"


def load_secret(config: RedactionConfig) -> bytes | None:
    """The pseudonymisation secret from ``config.secret_file`` or the ``config.secret_env`` variable.

    Returns:
        The secret as bytes, or None when neither holds one.

    Raises:
        AyarError: the key file cannot be read, or the secret is shorter than 16 characters.
    """
    if config.secret_file is not None:
        try:
            secret = Path(config.secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AyarError(f"{config.secret_file}: cannot read the PII key file ({exc.strerror})") from None
        source = str(config.secret_file)
    else:
        secret = os.environ.get(config.secret_env, "").strip()
        source = f"${config.secret_env}"
    if not secret:
        return None
    return check_secret(secret.encode("utf-8"), source, config.secret_env)


def check_secret(secret: bytes, source: str, env: str = "AYAR_PII_SECRET") -> bytes:
    """Return ``secret`` if it is long enough to key HMACs; raise AyarError naming ``source`` otherwise."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise AyarError(f"{source}: the PII secret has {len(secret)} characters; use at least {MIN_SECRET_LENGTH} "
                        f"({_SECRET_HINT.format(env=env)})")
    return secret


def missing_secret_error(config: RedactionConfig) -> AyarError:
    keyed = sorted(e for e in config.entities if config.operator_for(e) in ("pseudonymize", "hash"))
    return AyarError(
        f"pii: pseudonymize/hash is configured for {', '.join(keyed)} but no secret was found: set the "
        f"environment variable {config.secret_env} or pii.secret_file "
        f"({_SECRET_HINT.format(env=config.secret_env)}); the secret never goes in the recipe")


def normalise(entity: str, value: str) -> str:
    """The form of ``value`` that is keyed: "0532 123 45 67" and "+905321234567" are one number."""
    if entity in ("TCKN", "VKN", "CREDIT_CARD", "IBAN", "LICENSE_PLATE"):
        return re.sub(r"[\s-]", "", value).upper()
    if entity == "PHONE_NUMBER":
        return national_phone_digits(value) or value
    if entity == "DATE_OF_BIRTH":
        date = parse_date(value)
        return date.isoformat() if date else value
    if entity == "IP_ADDRESS":
        try:
            return ipaddress.ip_address(value).compressed
        except ValueError:
            return value
    if entity in ("PERSON", "EMAIL_ADDRESS", "ADDRESS"):
        return " ".join(tr_lower(value).split())
    return value.strip()


def keyed_digest(secret: bytes, purpose: str, entity: str, value: str) -> bytes:
    """HMAC-SHA256 of the normalised value, separated by purpose ("pseudonym", "hash") and entity type."""
    message = f"{purpose}\x00{entity}\x00{normalise(entity, value)}".encode()
    return hmac.new(secret, message, hashlib.sha256).digest()


def mask(entity: str) -> str:
    """The placeholder of ``entity``: "[TCKN]", "[TELEFON]", ..."""
    return f"[{PLACEHOLDERS[entity]}]"


def hash_value(secret: bytes, entity: str, value: str, length: int = 12) -> str:
    """"[TCKN:3fa9c2d1e0b4]": the first ``length`` hex characters of the keyed digest."""
    return f"[{PLACEHOLDERS[entity]}:{keyed_digest(secret, 'hash', entity, value).hex()[:length]}]"


def pseudonymize(secret: bytes, entity: str, value: str) -> str:
    """A fake of the same kind and shape as ``value``, the same for the same secret and value."""
    rng = random.Random(int.from_bytes(keyed_digest(secret, "pseudonym", entity, value), "big"))
    original = normalise(entity, value)
    for _ in range(8):  # a small pool (names) can draw the original itself: draw again
        fake = PSEUDONYMIZERS[entity](value, rng)
        if normalise(entity, fake) != original:
            return fake
    return mask(entity)  # never hand the original back


def _replace_chars(original: str, new: str, keep: Callable[[str], bool] = str.isdigit) -> str:
    """Write ``new`` into the last ``len(new)`` positions of ``original`` where ``keep`` holds.

    Separators and any leading prefix ("+90 ") stay as they were.
    """
    positions = [i for i, c in enumerate(original) if keep(c)][-len(new):]
    chars = list(original)
    for i, c in zip(positions, new, strict=False):
        chars[i] = c
    return "".join(chars)


def _fake_tckn(value: str, rng: random.Random) -> str:
    return _replace_chars(value, fakes.fake_tckn(rng))


def _fake_vkn(value: str, rng: random.Random) -> str:
    return _replace_chars(value, fakes.fake_vkn(rng))


def _fake_iban(value: str, rng: random.Random) -> str:
    country = value[:2].upper()
    return _replace_chars(value.upper(), fakes.fake_iban(rng, country), keep=str.isalnum)


def _fake_card(value: str, rng: random.Random) -> str:
    digits = re.sub(r"\D", "", value)
    prefix = "9792" if digits.startswith("9792") else digits[0]
    return _replace_chars(value, fakes.fake_card(rng, len(digits), prefix))


def _fake_phone(value: str, rng: random.Random) -> str:
    national = national_phone_digits(value) or ""
    if len(national) == 7:
        new = fakes.fake_call_centre(rng)
    else:
        kind = "mobile" if national.startswith("5") else ("service" if national.startswith("8") else "landline")
        new = fakes.fake_phone(rng, kind)
    return _replace_chars(value, new)


def _fake_email(value: str, rng: random.Random) -> str:
    return fakes.fake_email(rng)


def _fake_ip(value: str, rng: random.Random) -> str:
    return fakes.fake_ipv6(rng) if ipaddress.ip_address(value).version == 6 else fakes.fake_ipv4(rng)


def _fake_plate(value: str, rng: random.Random) -> str:
    compact = value.replace(" ", "")
    letters = sum(c.isalpha() for c in compact)
    new = fakes.fake_plate(rng, letters=letters, digits=len(compact) - 2 - letters, spaced=False)
    return _replace_chars(value, new, keep=str.isalnum)


def _fake_date(value: str, rng: random.Random) -> str:
    date = fakes.fake_birth_date(rng)
    parts = re.split(r"(\d+|[^\W\d_]+)", value)  # [sep, part, sep, part, sep, part, sep]
    order = ("year", "month", "day") if len(parts[1]) == 4 else ("day", "month", "year")
    for index, field in zip((1, 3, 5), order, strict=True):
        old = parts[index]
        if field == "month" and not old.isdigit():
            name = MONTHS[date.month - 1]
            parts[index] = tr_upper(name) if old.isupper() else (name if old.islower() else name.capitalize())
        else:
            number = {"day": date.day, "month": date.month, "year": date.year}[field]
            parts[index] = str(number % 100 if field == "year" and len(old) == 2 else number).zfill(len(old))
    return "".join(parts)


def _fake_address(value: str, rng: random.Random) -> str:
    return fakes.fake_address(rng)


def _with_case_of(word: str, template: str) -> str:
    if template.isupper() and len(template) > 1:
        return tr_upper(word)
    return tr_lower(word) if template.islower() else word


def _fake_person(value: str, rng: random.Random) -> str:
    words = value.split()
    known_given = given_name_keys()
    new = [fakes.fake_given_name(rng) for _ in words[:-1]]
    last_pool = given_names() if len(words) == 1 and tr_lower(words[0]) in known_given else surnames()
    new.append(fakes.fake_name_like(rng, words[-1], last_pool))
    return " ".join(_with_case_of(n, w) for n, w in zip(new, words, strict=True))


# Entity type -> fake of the same kind and shape, from the value and a seeded generator.
PSEUDONYMIZERS: dict[str, Callable[[str, random.Random], str]] = {
    "TCKN": _fake_tckn,
    "VKN": _fake_vkn,
    "IBAN": _fake_iban,
    "CREDIT_CARD": _fake_card,
    "PHONE_NUMBER": _fake_phone,
    "EMAIL_ADDRESS": _fake_email,
    "IP_ADDRESS": _fake_ip,
    "LICENSE_PLATE": _fake_plate,
    "DATE_OF_BIRTH": _fake_date,
    "ADDRESS": _fake_address,
    "PERSON": _fake_person,
    # Health identifiers (no checksum): the digits redrawn, letters and separators kept.
    "SGK_NUMBER": lambda value, rng: _replace_chars(value, "".join(rng.choice("0123456789") for _ in value)),
    "PATIENT_ID": lambda value, rng: _replace_chars(value, "".join(rng.choice("0123456789") for _ in value)),
    "ICD10": lambda value, rng: rng.choice("ABCDEFGHIJKLMNOPQRSTVWXYZ") + _replace_chars(
        value[1:], "".join(rng.choice("0123456789") for _ in value)),
}

