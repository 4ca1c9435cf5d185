"""A chat-style benchmark of the redactor: Turkish messages as customers write them.

:func:`benchmark_records` builds, from a seed, records of one to four short
sentences from ``data/benchmark.yaml``: people named in greetings, titles,
signatures, with case suffixes and speaking verbs; T.C. Kimlik numbers plain and
grouped; IBANs of several countries in any spacing; phone numbers with and
without the leading 0, dotted or bare; SGK, patient protocol and ICD-10 codes;
and *distractors*: order and tracking numbers, amounts, dates, timestamps,
product codes and the noun uses of name-words ("deniz manzaralı oda", "güneş
kremi"). Each record is then written in lower case, as typed (sentence starts
capitalised) or in upper case. The names come from the benchmark's own lists,
not from the gazetteer.

:func:`score` runs a :class:`~ayar.data.pii.engine.Redactor` over the records
and returns recall per entity kind (an entity counts as found when every one of
its letters and digits is inside some finding, of any type: what matters is
that it does not leak) and the share of distractors kept (no overlap with any
finding). ``python bench/pii.py`` prints both.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from functools import cache

import regex as re

from . import fakes
from .gazetteer import _read_yaml, given_name_keys, surname_keys, tr_lower, tr_upper

CASES = {"lower": 0.4, "typed": 0.4, "upper": 0.2}  # how a record is written, with its probability
_SLOT = re.compile(r"\{(\w+)\}|\[([^\]]+)\]")
_NAME_SLOTS = {"given", "given2", "surname", "word_given", "word_surname"}
_DISTRACTOR_SLOTS = {"order", "tracking", "amount", "date", "time", "product", "invoice", "count"}
_ICD10 = ("J45.9", "E11.9", "I10", "K21.0", "M54.5", "F32.1", "C50.9", "N39.0", "Z34.0", "G43.9", "E78.5",
          "J06.9", "K29.7", "R51", "M17.1")
_PHONE_STYLES = ("0### ### ## ##", "### ### ## ##", "0###.###.##.##", "###.###.##.##", "+90 ### ### ## ##",
                 "0##########", "##########", "(0###) ### ## ##", "###-###-####", "0 ### ### ## ##",
                 "+90##########", "### ### ####")
_IBAN_COUNTRIES = ("TR",) * 6 + ("DE", "GB", "NL", "FR", "AZ")


@dataclass
class Record:
    """One benchmark message: its text, the entities that must go and the distractors that must stay."""

    text: str
    case: str
    entities: list[tuple[str, int, int, str]] = field(default_factory=list)  # (kind, start, end, tag)
    distractors: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, start, end)


@cache
def material() -> dict:
    """The benchmark's name lists and sentence templates (``data/benchmark.yaml``)."""
    return _read_yaml("benchmark.yaml")


def _group_randomly(compact: str, rng: random.Random) -> str:
    """"TR330006..." -> "TR33 00 0610 05197 ..." with irregular group sizes and some double spaces."""
    out, i = compact[:4], 4
    if rng.random() < 0.3:
        out = compact[:2] + " " + compact[2:4]
    while i < len(compact):
        size = rng.randint(2, 6)
        out += (" " if rng.random() < 0.8 else "  ") + compact[i:i + size]
        i += size
    return out


def _iban(rng: random.Random) -> str:
    compact = fakes.fake_iban(rng, rng.choice(_IBAN_COUNTRIES)).replace(" ", "")
    style = rng.randrange(4)
    if style == 0:
        return fakes.group_iban(compact)
    if style == 1:
        return compact
    if style == 2:
        return compact[:2] + " " + fakes.group_iban(compact)[2:]
    return _group_randomly(compact, rng)


def _tckn_grouped(rng: random.Random) -> str:
    digits = fakes.fake_tckn(rng)
    sep = rng.choice((" ", " ", "."))
    return sep.join((digits[:3], digits[3:6], digits[6:9], digits[9:]))


def _value(slot: str, rng: random.Random) -> str:
    """A value for an identifier or distractor slot."""
    if slot == "tckn":
        return fakes.fake_tckn(rng)
    if slot == "tckn_grouped":
        return _tckn_grouped(rng)
    if slot == "iban":
        return _iban(rng)
    if slot == "phone":
        national = str(rng.choice(sorted(fakes.phone_prefixes()["mobile"]))) + fakes._digits(rng, 7)
        return fakes.fill_template(rng.choice(_PHONE_STYLES), national)
    if slot == "sgk":
        digits = fakes._digits(rng, rng.choice((10, 13)))
        return digits if rng.random() < 0.7 else f"{digits[:4]} {digits[4:8]} {digits[8:]}"
    if slot == "protocol":
        n = fakes._digits(rng, rng.randint(5, 8))
        return rng.choice((f"{rng.randint(2019, 2026)}/{n}", f"P-{n}", n, f"H{n}"))
    if slot == "icd10":
        return rng.choice(_ICD10)
    raise ValueError(f"unknown benchmark slot {slot!r}")


def _distractor(slot: str, rng: random.Random) -> str:
    if slot == "order":
        return rng.choice(("#", "", "TY")) + fakes._digits(rng, rng.randint(6, 10)).lstrip("0")
    if slot == "tracking":
        return rng.choice((fakes._digits(rng, 12), f"{rng.choice(('YK', 'AR', 'MN'))}{fakes._digits(rng, 9)}TR"))
    if slot == "amount":
        whole = rng.randint(10, 9999)
        return f"{whole:,}".replace(",", ".") + rng.choice((",00 TL", ",90 TL", " TL", " ₺"))
    if slot == "date":
        return f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2023, 2026)}"
    if slot == "time":
        return (f"{rng.randint(2023, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}")
    if slot == "product":
        return rng.choice((f"X{rng.randint(100, 999)}-B", f"SKU{fakes._digits(rng, 5)}", f"A{rng.randint(10, 99)}"))
    if slot == "invoice":
        return f"GIB{rng.randint(2023, 2026)}{fakes._digits(rng, 9)}"
    if slot == "count":
        return str(rng.randint(2, 40))
    raise ValueError(f"unknown benchmark slot {slot!r}")


def _names(rng: random.Random) -> dict[str, str]:
    m = material()
    given = rng.sample(m["given"], 2)
    return {"given": given[0], "given2": given[1], "surname": rng.choice(m["surnames"]),
            "word_given": rng.choice(m["word_given"]), "word_surname": rng.choice(m["word_surname"])}


def _render(template: str, rng: random.Random, kind: str | None, offset: int, record: Record) -> str:
    """Fill ``template``; record its entity (of ``kind``, or a person) and distractor spans from ``offset``."""
    names, out, person, tag = _names(rng), "", None, "plain"
    pos = 0
    for match in _SLOT.finditer(template):
        out += template[pos:match.start()]
        pos = match.end()
        start = offset + len(out)
        if match.group(1) in _NAME_SLOTS:
            out += names[match.group(1)]
            if match.group(1).startswith("word"):
                tag = "name-word"
            if person is not None and person[1] == start - 1 and template[match.start() - 1] == " ":
                person = (person[0], offset + len(out))  # "{given} {surname}": one name
            else:
                if person is not None:
                    record.entities.append(("PERSON", person[0], person[1], tag))
                person = (start, offset + len(out))
        elif match.group(1):
            out += _value(match.group(1), rng)
            record.entities.append((kind or match.group(1).upper(), start, offset + len(out), match.group(1)))
        else:
            slot = match.group(2)
            out += _distractor(slot, rng) if slot in _DISTRACTOR_SLOTS else slot
            record.distractors.append((slot if slot in _DISTRACTOR_SLOTS else "word", start, offset + len(out)))
    if person is not None:
        record.entities.append(("PERSON", person[0], person[1], tag))
    return out + template[pos:]


def _recase(record: Record, case: str) -> Record:
    """``record`` written in ``case``; Turkish case mapping keeps the length, so spans stay valid."""
    if case == "lower":
        text = tr_lower(record.text)
    elif case == "upper":
        text = tr_upper(record.text)
    else:  # as typed: sentence starts capitalised
        text = re.sub(r"(^|[.!?\n]\s*)(\p{Ll})", lambda m: m.group(1) + tr_upper(m.group(2)), record.text)
    return Record(text, case, record.entities, record.distractors)


def _record(rng: random.Random) -> Record:
    m = material()
    parts: list[tuple[str, str | None]] = []
    for _ in range(rng.choice((1, 1, 2))):
        if rng.random() < 0.55:
            parts.append((rng.choice(m["person"]), None))
        else:
            kind, template = rng.choice(m["identifier"])
            parts.append((template, kind))
    parts += [(rng.choice(m["distractor"]), None) for _ in range(rng.choice((1, 1, 2)))]
    if rng.random() < 0.5:
        parts.append((rng.choice(m["filler"]), None))
    rng.shuffle(parts)
    record = Record("", "typed")
    for i, (template, kind) in enumerate(parts):
        if i:
            record.text += rng.choices((". ", ", ", "\n", " "), weights=(35, 25, 30, 10))[0]
        record.text += _render(template, rng, kind, len(record.text), record)
    case = rng.choices(list(CASES), weights=list(CASES.values()))[0]
    return _recase(record, case)


def benchmark_records(n: int = 600, seed: int = 0) -> list[Record]:
    """``n`` benchmark records, the same for the same seed."""
    rng = random.Random(seed)
    return [_record(rng) for _ in range(n)]


def _covered(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    inside = set()
    for s, e in spans:
        inside.update(range(max(s, start), min(e, end)))
    return all(i in inside for i in range(start, end) if text[i].isalnum())


def score(records: list[Record], redactor) -> dict:
    """Recall per entity kind and the share of distractors kept, from ``redactor`` run on ``records``.

    Returns:
        ``{"recall": {kind: r}, "found": {kind: [found, total]}, "person_by": {group: r},
        "distractors_kept": share, "distractors_by_kind": {kind: share}, "leaks": [...]}``;
        ``leaks`` holds up to 20 (kind, text) of entities that were missed and distractors that
        were not kept, for tuning (synthetic data only).
    """
    found, total, kept, seen = Counter(), Counter(), Counter(), Counter()
    leaks = []
    outputs = redactor.redact_texts([r.text for r in records])
    for record, (_, findings) in zip(records, outputs, strict=True):
        spans = [(f.start, f.end) for f in findings]
        for kind, start, end, tag in record.entities:
            keys = [kind] + ([f"PERSON {record.case}", f"PERSON {tag}"] if kind == "PERSON" else [])
            hit = _covered(record.text, start, end, spans)
            for key in keys:
                total[key] += 1
                found[key] += hit
            if not hit and len(leaks) < 20:
                leaks.append((kind, record.text[start:end], record.text))
        for kind, start, end in record.distractors:
            ok = all(e <= start or s >= end for s, e in spans)
            seen[kind] += 1
            kept[kind] += ok
            if not ok and len(leaks) < 40:
                leaks.append((f"distractor {kind}", record.text[start:end], record.text))
    recall = {k: round(found[k] / total[k], 4) for k in sorted(total)}
    return {
        "records": len(records),
        "recall": {k: v for k, v in recall.items() if " " not in k},
        "found": {k: [found[k], total[k]] for k in sorted(total) if " " not in k},
        "person_by": {k.split(" ", 1)[1]: v for k, v in recall.items() if k.startswith("PERSON ")},
        "distractors_kept": round(sum(kept.values()) / max(1, sum(seen.values())), 4),
        "distractors_by_kind": {k: round(kept[k] / seen[k], 4) for k in sorted(seen)},
        "leaks": leaks,
    }


def gazetteer_coverage() -> dict[str, float]:
    """Share of the benchmark's given names and surnames that the gazetteer holds (the rest are unseen)."""
    m = material()
    given = [tr_lower(n) for n in m["given"] + m["word_given"]]
    surnames = [tr_lower(n) for n in m["surnames"] + m["word_surname"]]
    return {"given": round(sum(n in given_name_keys() for n in given) / len(given), 3),
            "surnames": round(sum(n in surname_keys() for n in surnames) / len(surnames), 3)}
