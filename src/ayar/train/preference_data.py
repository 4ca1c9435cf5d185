"""Preference data for training: pairs (DPO, ORPO, CPO, SimPO) and rated replies (KTO), tokenised.

A pair is one prompt and two completions. The prompt is rendered with the
chat template up to the assistant's turn; each completion is what the template
adds for the reply (its content and end-of-turn token are the targets). Rules
applied the same way to chosen and rejected:

1. a prompt longer than ``preference.max_prompt_length`` keeps its *last* tokens
   (the most recent turns matter most);
2. completions are cut so prompt + completion fits ``data.max_length``;
3. a pair that cannot be used — identical chosen and rejected (also after the
   cut), an empty completion, or a prompt that leaves no room for a completion —
   is dropped and counted, or stops the run when ``preference.bad_pairs: error``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.chat.tokenize import encode_conversation
from ayar.data.formats import RecordError, convert, detect_format
from ayar.data.read import iter_jsonl
from ayar.errors import AyarError, DataError

# RecordError codes that are bad *pairs* (handled per preference.bad_pairs), not malformed records.
BAD_PAIR_CODES = {"identical_pair": "identical chosen and rejected", "empty_text": "empty completion"}


@dataclass
class PairExample:
    """Token ids of one pair; ``labels`` mark the completion targets (IGNORE elsewhere)."""

    prompt: list[int]
    chosen: list[int]
    chosen_labels: list[int]
    rejected: list[int]
    rejected_labels: list[int]
    ref: tuple[float, float] | None = None  # precomputed reference log-probs (chosen, rejected), when used

    def rows(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
        """(ids, labels) of the chosen and the rejected sequence."""
        mask = [IGNORE] * len(self.prompt)
        return ((self.prompt + self.chosen, mask + self.chosen_labels),
                (self.prompt + self.rejected, mask + self.rejected_labels))

    @property
    def input_ids(self) -> list[int]:  # the longer row, for length grouping
        return self.prompt + (self.chosen if len(self.chosen) >= len(self.rejected) else self.rejected)


@dataclass
class KtoItem:
    """One rated completion, plus a mismatched completion (another example's) for the KL estimate."""

    prompt: list[int]
    completion: list[int]
    labels: list[int]
    desirable: bool
    kl_completion: list[int] = field(default_factory=list)
    kl_labels: list[int] = field(default_factory=list)
    ref: tuple[float, float] | None = None  # precomputed reference log-probs (completion, KL row), when used

    def rows(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
        mask = [IGNORE] * len(self.prompt)
        return ((self.prompt + self.completion, mask + self.labels),
                (self.prompt + self.kl_completion, mask + self.kl_labels))

    @property
    def input_ids(self) -> list[int]:
        return self.prompt + self.completion


@dataclass
class PreferenceStats:
    """What happened to the records (for the run summary and the console)."""

    records: int = 0
    examples: int = 0
    truncated: int = 0  # examples whose prompt or completions were cut
    dropped_no_target: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    tokens: int = 0
    target_tokens: int = 0
    desirable: int = 0  # KTO
    undesirable: int = 0


def _split(tokenizer, prompt: list[dict], reply: str) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, completion ids, completion labels) of prompt + one assistant reply."""
    enc = encode_conversation(tokenizer, prompt + [{"role": "assistant", "content": reply}], loss_on="last_assistant")
    start = next(i for i, t in enumerate(enc.labels) if t != IGNORE)
    return enc.input_ids[:start], enc.input_ids[start:], enc.labels[start:]


def _fit(prompt: list[int], completions: list[tuple[list[int], list[int]]], max_length: int,
         max_prompt_length: int | None) -> tuple[list[int], list[tuple[list[int], list[int]]], bool]:
    """Apply the truncation rules; returns the cut prompt and completions and whether anything was cut."""
    cut = False
    if max_prompt_length and len(prompt) > max_prompt_length:
        prompt, cut = prompt[-max_prompt_length:], True
    room = max_length - len(prompt)
    out = []
    for ids, labels in completions:
        if len(ids) > room:
            ids, labels, cut = ids[:max(room, 0)], labels[:max(room, 0)], True
        out.append((ids, labels))
    return prompt, out, cut


def _targets(labels: list[int]) -> int:
    return sum(1 for t in labels if t != IGNORE)


class _Reader:
    """Reads one file's records of the expected kind, applying the bad-pair policy."""

    def __init__(self, path: str, kind: str, bad_pairs: str, stats: PreferenceStats):
        self.path, self.kind, self.bad_pairs, self.stats = path, kind, bad_pairs, stats

    def bad(self, line: int, reason: str) -> None:
        if self.bad_pairs == "error":
            raise DataError(self.path, line, reason,
                            "fix or remove the record, or set preference.bad_pairs: drop to skip such records")
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1

    def records(self):
        expected = {"preference": "a preference pair (prompt, chosen, rejected)",
                    "kto": "a rated reply (prompt, completion, label)"}[self.kind]
        for line, raw in iter_jsonl(self.path):
            self.stats.records += 1
            fmt = detect_format(raw)
            if fmt != self.kind:
                raise DataError(self.path, line, f"expected {expected}, found fields {sorted(raw)}",
                                "prepare the data with `ayar prepare` or use the method that fits it")
            try:
                yield line, convert(raw, fmt, self.path, line)
            except RecordError as exc:
                if exc.code in BAD_PAIR_CODES:
                    self.bad(line, BAD_PAIR_CODES[exc.code])
                else:
                    raise DataError(self.path, line, exc.detail) from None


def read_pairs(path: str, tokenizer, max_length: int, max_prompt_length: int | None = None,
               bad_pairs: str = "drop") -> tuple[list[PairExample], PreferenceStats]:
    """Tokenised pairs from a JSONL file of preference records (TRL's forms, or ``ayar prepare`` output).

    Raises:
        DataError: a record that is not a pair or is malformed (file and line named), or
            a bad pair when ``bad_pairs`` is ``"error"``.
    """
    stats = PreferenceStats()
    reader = _Reader(path, "preference", bad_pairs, stats)
    examples = []
    for line, record in reader.records():
        try:
            prompt, chosen, chosen_labels = _split(tokenizer, record.prompt, record.chosen)
            prompt_r, rejected, rejected_labels = _split(tokenizer, record.prompt, record.rejected)
        except (ValueError, AyarError) as exc:
            raise DataError(path, line, str(exc)) from None
        if prompt != prompt_r:
            raise DataError(path, line, "the chat template renders the prompt differently for chosen and rejected")
        prompt, [(chosen, chosen_labels), (rejected, rejected_labels)], cut = _fit(
            prompt, [(chosen, chosen_labels), (rejected, rejected_labels)], max_length, max_prompt_length)
        if not _targets(chosen_labels) or not _targets(rejected_labels):
            reader.bad(line, f"prompt of {len(prompt)} tokens leaves no room for a completion within "
                             f"data.max_length={max_length}")
            continue
        if chosen == rejected:
            reader.bad(line, "identical chosen and rejected after truncation")
            continue
        stats.truncated += cut
        stats.examples += 1
        stats.tokens += 2 * len(prompt) + len(chosen) + len(rejected)
        stats.target_tokens += _targets(chosen_labels) + _targets(rejected_labels)
        examples.append(PairExample(prompt, chosen, chosen_labels, rejected, rejected_labels))
    return examples, stats


def read_kto(path: str, tokenizer, max_length: int, max_prompt_length: int | None = None,
             bad_pairs: str = "drop", seed: int = 0) -> tuple[list[KtoItem], PreferenceStats]:
    """Tokenised rated replies, each given a mismatched completion for the KL reference point.

    The mismatched completion of an example is the completion of the example
    before it in a seeded shuffle (a cycle, so every completion is used once);
    it is never the example's own completion text. With a fixed pairing the
    KL rows' reference log-probs can be precomputed like the others.

    Raises:
        DataError: as :func:`read_pairs`; fewer than two examples (no mismatched pair).
    """
    stats = PreferenceStats()
    reader = _Reader(path, "kto", bad_pairs, stats)
    items: list[KtoItem] = []
    texts: list[str] = []
    for line, record in reader.records():
        try:
            prompt, completion, labels = _split(tokenizer, record.prompt, record.completion)
        except (ValueError, AyarError) as exc:
            raise DataError(path, line, str(exc)) from None
        prompt, [(completion, labels)], cut = _fit(prompt, [(completion, labels)], max_length, max_prompt_length)
        if not _targets(labels):
            reader.bad(line, f"prompt of {len(prompt)} tokens leaves no room for a completion within "
                             f"data.max_length={max_length}")
            continue
        stats.truncated += cut
        stats.examples += 1
        stats.desirable += record.label
        stats.undesirable += not record.label
        stats.tokens += len(prompt) + len(completion)
        stats.target_tokens += _targets(labels)
        items.append(KtoItem(prompt, completion, labels, record.label))
        texts.append(record.completion)
    if 0 < len(items) < 2:
        raise DataError(path, None, "KTO needs at least two examples: the KL estimate pairs each prompt with "
                                    "another example's completion")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    for k, i in enumerate(order):
        # the previous example in the cycle; skip forward past identical completion texts
        for step in range(1, len(order)):
            j = order[(k - step) % len(order)]
            if texts[j] != texts[i]:
                break
        else:
            raise DataError(path, None, "all completions are the same text; the KL estimate needs different ones")
        room = max_length - len(items[i].prompt)
        items[i].kl_completion = items[j].completion[:room]
        items[i].kl_labels = items[j].labels[:room]
    return items, stats
