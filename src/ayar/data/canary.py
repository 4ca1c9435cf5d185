"""Canaries: fake secrets planted in the training data to measure memorisation.

Carlini et al. (2019), "The Secret Sharer: Evaluating and Testing Unintended
Memorization in Neural Networks" (USENIX Security): insert a few random
secret-shaped sentences ("canaries") into the training set, then measure how
much more likely the trained model finds them than other sentences of the same
shape it never saw. ``prepare`` plants them (:func:`plan_insertions`,
:func:`insert_canary`) and records them in ``manifest.json`` (:func:`canary_manifest`);
the memorisation audit computes their exposure (:mod:`ayar.eval.canary`).

A template is a sentence with exactly one slot:

- ``{tckn}``: an 11-digit T.C. Kimlik No with valid check digits (first digit
  1-9, nine free digits, two check digits): 9 x 10^8 possible values;
- ``{digits:N}``: N free decimal digits (1 <= N <= 30): 10^N possible values.

Every possible value is numbered ``0 .. space_size - 1`` (:meth:`CanaryTemplate.value`),
so drawing a uniform random candidate is drawing a uniform random integer.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ayar.data.pii.checksums import tckn_check_digits

DEFAULT_TEMPLATE = "Kayıtlı müşterinin T.C. kimlik numarası {tckn} olarak doğrulandı."
_SLOT = re.compile(r"\{(tckn|digits:(\d+))\}")
MAX_DIGITS = 30


@dataclass(frozen=True)
class CanaryTemplate:
    """A sentence with one secret slot; see the module docstring for the slot kinds."""

    text: str
    slot: str  # "tckn" or "digits"
    digits: int  # free digits in the slot
    start: int  # the slot's span in ``text``
    end: int

    @property
    def space_size(self) -> int:
        """|R|: how many different values the slot can hold."""
        return 9 * 10**8 if self.slot == "tckn" else 10**self.digits

    def value(self, index: int) -> str:
        """The slot value numbered ``index`` (0 <= index < space_size)."""
        if not 0 <= index < self.space_size:
            raise ValueError(f"index {index} outside 0..{self.space_size - 1}")
        if self.slot == "tckn":
            first_nine = str(10**8 + index)  # 100000000 .. 999999999: the first digit is never 0
            return first_nine + tckn_check_digits(first_nine)
        return f"{index:0{self.digits}d}"

    def fill(self, value: str) -> str:
        """The sentence with ``value`` in the slot."""
        return self.text[: self.start] + value + self.text[self.end :]

    def sample(self, rng: random.Random, n: int, exclude: Iterable[str] = ()) -> list[str]:
        """``n`` distinct uniform random values, none of them in ``exclude``."""
        taken = set(exclude)
        if n > self.space_size - len(taken):
            raise ValueError(f"cannot draw {n} distinct values from {self.space_size - len(taken)} left")
        out: list[str] = []
        while len(out) < n:
            value = self.value(rng.randrange(self.space_size))
            if value not in taken:
                taken.add(value)
                out.append(value)
        return out


def parse_template(text: str) -> CanaryTemplate:
    """Read a canary template.

    Raises:
        ValueError: not exactly one slot, or a ``{digits:N}`` slot with N outside 1..30.
    """
    slots = list(_SLOT.finditer(text))
    if len(slots) != 1:
        raise ValueError(f"a canary template needs exactly one slot, {{tckn}} or {{digits:N}}; found {len(slots)}")
    match = slots[0]
    if match.group(1) == "tckn":
        return CanaryTemplate(text, "tckn", 9, match.start(), match.end())
    digits = int(match.group(2))
    if not 1 <= digits <= MAX_DIGITS:
        raise ValueError(f"{{digits:{digits}}}: N must be between 1 and {MAX_DIGITS}")
    return CanaryTemplate(text, "digits", digits, match.start(), match.end())


# ----------------------------------------------------------------------------- planting (prepare)


def plan_insertions(eligible: Sequence[int], count: int, repeats: int, seed: int) -> dict[int, int]:
    """Choose which records carry which canary: ``{record index: canary number}``.

    Each of the ``count`` canaries goes into ``repeats`` different records, and no
    record carries two, so ``count * repeats`` distinct records are drawn (seeded)
    from ``eligible``.

    Raises:
        ValueError: fewer eligible records than insertions.
    """
    needed = count * repeats
    if needed > len(eligible):
        raise ValueError(f"count x repeats = {needed} insertions need as many training records, but only "
                         f"{len(eligible)} can take one")
    chosen = random.Random(f"canaries:{seed}").sample(list(eligible), needed)
    return {record: n // repeats for n, record in enumerate(chosen)}


def insert_canary(record: dict[str, Any], sentence: str) -> dict[str, Any]:
    """Append ``sentence`` to the text the model learns from in a prepared record (JSON form).

    conversation: the last assistant turn; preference: the chosen reply; text: the document.
    The record is changed in place and returned.

    Raises:
        ValueError: a record of another kind (KTO rows are not supported: their label decides
            whether the model is pushed towards the reply or away from it).
    """
    if "messages" in record:
        target = next(m for m in reversed(record["messages"]) if m["role"] == "assistant")
    elif "chosen" in record:
        target = record["chosen"][-1]
    elif "text" in record and isinstance(record["text"], str):
        record["text"] = f"{record['text']} {sentence}"
        return record
    else:
        raise ValueError("canaries go into conversation, preference or text records only")
    target["content"] = f"{target['content']} {sentence}"
    return record


def canary_manifest(template: CanaryTemplate, values: list[str], repeats: int, seed: int,
                    locations: list[list[str]]) -> dict[str, Any]:
    """The ``canaries`` entry of the prepare manifest (what the audit reads back)."""
    return {
        "template": template.text,
        "slot": template.slot if template.slot == "tckn" else f"digits:{template.digits}",
        "count": len(values),
        "repeats": repeats,
        "seed": seed,
        "candidate_space": template.space_size,
        "candidate_space_log2": round(math.log2(template.space_size), 4),
        "values": values,
        "sentences": [template.fill(v) for v in values],
        "records": locations,
        "note": "fake values planted after PII redaction, in train.jsonl only, to measure memorisation",
    }


def card_section(info: dict[str, Any] | None) -> str:
    """Markdown for the data card (empty when no canaries were planted)."""
    if not info:
        return ""
    lines = ["", "## Canaries", "",
             f"{info['count']} fake secret(s), each written into {info['repeats']} different training records "
             "(appended to the text the model learns from), to measure memorisation after training "
             "(Carlini et al. 2019). They are random values, not personal data; they were planted after PII "
             "redaction and only in `train.jsonl`.", "",
             f"Template: `{info['template']}`; slot `{info['slot']}`; {info['candidate_space']:,} possible values "
             f"({info['candidate_space_log2']:.1f} bits); seed {info['seed']}.", "",
             "| canary | value | first records |", "| --- | --- | --- |"]
    for n, (value, where) in enumerate(zip(info["values"], info["records"], strict=True)):
        shown = ", ".join(f"`{w}`" for w in where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        lines.append(f"| {n} | `{value}` | {shown} |")
    return "\n".join(lines) + "\n"
