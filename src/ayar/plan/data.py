"""What the training data will cost: token counts, padding and the micro-batches a run will see.

Token counts come from the actual files, tokenised exactly as training does
(the method's own example builder, with the chat template). Files with more
than ``SAMPLE`` records are sampled: ``SAMPLE`` records drawn at random, totals
scaled by the record count, with a 95% interval from the sample's spread.

The texts of the same records (all of them, or the same sample) are what the
tokenizer figures of the plan are measured on (:func:`sample_texts`).

The micro-batch stream is simulated with the loop's own batching
(:func:`ayar.train.batching.micro_batches`: same seed, same length grouping), so
padding and the largest micro-batch are those the run will meet.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.errors import AyarError

SAMPLE = 2000  # records tokenised from a large file
SIMULATED_BATCHES = 20000  # micro-batches simulated; longer runs repeat their average
SIMULATED_EXAMPLES = 200_000  # and at most this many examples in them


@dataclass
class DataProfile:
    """Per example: its rows as (length, target positions); and the file's estimated totals."""

    rows: list[list[tuple[int, int]]]
    records: int  # records in the file (counted, not estimated)
    examples: int  # usable examples, estimated for the whole file
    tokens: int
    target_tokens: int
    rel_error: float = 0.0  # 95% half-width of the token estimate, relative (0: every record tokenised)
    truncated: int = 0

    @property
    def sampled(self) -> bool:
        return self.rel_error > 0 or len(self.rows) < self.examples


@dataclass
class Stream:
    """The micro-batches of a run (simulated): shapes of each, and totals."""

    shapes: list[tuple[int, int, int]] = field(default_factory=list)  # (rows, padded seq, target positions)
    micro_batches: int = 0
    real_tokens: float = 0.0
    padded_tokens: float = 0.0

    @property
    def padding(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def largest(self) -> tuple[int, int, int]:
        """The micro-batch that needs the most memory: most padded tokens, ties by targets."""
        return max(self.shapes, key=lambda s: (s[0] * s[1], s[2])) if self.shapes else (0, 0, 0)


def example_rows(example) -> list[tuple[int, int]]:
    """(length, target positions after the causal shift) of each row an example becomes."""
    pairs = example.rows() if hasattr(example, "rows") else [(example.input_ids, example.labels)]
    return [(len(ids), sum(1 for t in labels[1:] if t != IGNORE)) for ids, labels in pairs]


def profile_examples(examples, records: int | None = None) -> DataProfile:
    """A profile of examples already built (the pre-flight in ``ayar train`` uses this)."""
    rows = [example_rows(e) for e in examples]
    return DataProfile(rows, records or len(rows), len(rows), sum(n for r in rows for n, _ in r),
                       sum(t for r in rows for _, t in r))


def _count_records(path: Path) -> list[int]:
    """Byte offsets of the non-blank lines of a file."""
    offsets, pos = [], 0
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                offsets.append(pos)
            pos += len(line)
    return offsets


def _picked(n: int, sample: int, seed: int) -> list[int]:
    """The record numbers a sample of ``sample`` out of ``n`` records reads, in file order."""
    return sorted(random.Random(seed).sample(range(n), sample))


@contextmanager
def _sample_file(src: Path, offsets: list[int], picked: list[int]) -> Iterator[Path]:
    """A temporary copy of ``src`` holding only the records ``picked`` (numbers into ``offsets``)."""
    with src.open("rb") as fh, tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / f"sample{src.suffix}"
        with part.open("wb") as out:
            for i in picked:
                fh.seek(offsets[i])
                out.write(fh.readline().rstrip(b"\n") + b"\n")
        yield part


def profile_file(path: str, tokenizer, recipe, *, sample: int = SAMPLE, seed: int = 0) -> DataProfile:
    """Tokenise a training file as the method does (all of it, or a random sample of records).

    Raises:
        AyarError: the file is missing or holds no usable example.
    """
    from ayar.train.methods import METHODS

    src = Path(path)
    if not src.is_file():
        raise AyarError(f"data.train: {path} not found")
    build = METHODS[recipe.method].build_examples
    offsets = _count_records(src)
    n = len(offsets)
    if n <= sample or (src.suffix == ".txt" and recipe.method == "pretrain"):
        examples, stats = build(str(src), tokenizer, recipe)
        profile = profile_examples(examples, n)
        profile.truncated = getattr(stats, "truncated", 0)
        return profile
    with _sample_file(src, offsets, _picked(n, sample, seed)) as part:
        examples, stats = build(str(part), tokenizer, recipe)
    return _scaled(profile_examples(examples, n), n, sample, getattr(stats, "truncated", 0))


def sample_texts(path: str, *, sample: int = SAMPLE, seed: int = 0) -> list[str]:
    """The texts of the records :func:`profile_file` tokenises with the same ``sample`` and ``seed``
    (of a pretraining .txt file, which it tokenises whole, a sample of ``sample`` lines).

    Raises:
        AyarError: the file is missing, or a record that cannot be read (see
            :func:`ayar.tokenizer.report.load_texts`).
    """
    from ayar.tokenizer.report import load_texts

    src = Path(path)
    if not src.is_file():
        raise AyarError(f"data.train: {path} not found")
    offsets = _count_records(src)
    if len(offsets) <= sample:
        return load_texts(src)
    with _sample_file(src, offsets, _picked(len(offsets), sample, seed)) as part:
        return load_texts(part)


def _scaled(p: DataProfile, n: int, k: int, truncated: int) -> DataProfile:
    """Totals of a k-record sample scaled to n records, with the 95% interval of the token total."""
    per = [sum(length for length, _ in r) for r in p.rows] + [0] * (k - len(p.rows))  # dropped records: 0
    mean = sum(per) / k
    var = sum((x - mean) ** 2 for x in per) / max(k - 1, 1)
    se = math.sqrt(var / k * (1 - k / n))  # finite-population correction
    scale = n / k
    return DataProfile(p.rows, n, round(len(p.rows) * scale), round(p.tokens * scale),
                       round(p.target_tokens * scale), 1.96 * se / mean if mean else 0.0, round(truncated * scale))


def simulate(profile: DataProfile, micro_batch: int, accumulation: int, steps: int, seed: int,
             group_by_length: bool) -> Stream:
    """The micro-batches ``steps`` optimizer steps will run, as the loop draws them."""
    from ayar.train.batching import micro_batches

    rows = profile.rows
    if not rows:
        return Stream()
    lengths = [max(n for n, _ in r) for r in rows] if group_by_length else None
    total = steps * accumulation
    stream = micro_batches(len(rows), micro_batch, seed, lengths)
    out = Stream(micro_batches=total)
    simulated = min(total, SIMULATED_BATCHES, max(1, SIMULATED_EXAMPLES // micro_batch))
    for _ in range(simulated):
        idx = next(stream)
        members = [rows[i] for i in idx]
        seq = max(n for r in members for n, _ in r)
        n_rows = sum(len(r) for r in members)
        targets = sum(t for r in members for _, t in r)
        out.shapes.append((n_rows, seq, targets))
        out.real_tokens += sum(n for r in members for n, _ in r)
        out.padded_tokens += n_rows * seq
    if total > simulated:
        factor = total / simulated
        out.real_tokens *= factor
        out.padded_tokens *= factor
    return out
