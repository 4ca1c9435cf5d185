"""Checks every synthetic record passes: length, language, duplicates (against existing data too).

Each check returns None or a :class:`~ayar.synth.tasks.Rejected` reason; the stage writes rejected
records' locations and reasons (never their text) to ``rejects.jsonl``.

The language check is deliberately simple: a reply counts as Turkish when at least
:data:`TURKISH_SHARE` of its words are frequent Turkish function words (``turkish_words.txt``)
or hold a letter of the Turkish alphabet that English lacks (ç, ğ, ı, ö, ş, ü); see
:func:`ayar.tokenizer.words.turkish_share`. It tells a Turkish reply from an English one reliably; it does not
judge the Turkish.

Duplicates are found exactly as ``prepare`` finds them (:mod:`ayar.data.dedup`, on
:func:`~ayar.data.formats.record_text`): first against the records of ``dedup.against``, then
among the new records in order (the first one is kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ayar.data.dedup import NearIndex, exact_key, signatures
from ayar.data.formats import RecordError, apply_columns, convert, detect_format, record_text
from ayar.data.readers import container_of, iter_records, location, resolve_path
from ayar.errors import AyarError
from ayar.synth.config import QualityConfig, SynthDedupConfig
from ayar.synth.tasks import Rejected
from ayar.tokenizer.words import TURKISH_SHARE, turkish_share


def check_text(text: str, quality: QualityConfig, language: str) -> Rejected | None:
    """Length and language of the text the teacher wrote; None when it passes."""
    n = len(text.strip())
    if n < quality.min_chars:
        return Rejected("too_short", f"{n} characters, fewer than quality.min_chars={quality.min_chars}")
    if quality.max_chars is not None and n > quality.max_chars:
        return Rejected("too_long", f"{n} characters, more than quality.max_chars={quality.max_chars}")
    if language == "tr":
        share = turkish_share(text)
        if share < TURKISH_SHARE:
            return Rejected("not_turkish", f"{share:.0%} of its words look Turkish (at least {TURKISH_SHARE:.0%} "
                                           "needed)")
    return None


class Deduplicator:
    """Exact keys and a MinHash LSH index of the existing data, then of every new record accepted."""

    def __init__(self, config: SynthDedupConfig, base_dir: Path):
        self.config = config
        self._first: dict[bytes, str] = {}  # exact key -> where its first record is
        self._where: list[str] = []
        self._index = NearIndex(config.threshold, config.num_perm) if config.near else None
        self.existing = 0
        for path in config.against:
            where, texts = _existing_texts(path, base_dir)
            self.add(where, texts)
            self.existing += len(texts)

    def add(self, where: Sequence[str], texts: Sequence[str]) -> list[Rejected | None]:
        """Check ``texts`` in order against everything before them; the ones that pass join the index."""
        sigs = signatures(texts, self.config.num_perm, self.config.ngram) if self._index is not None else None
        out: list[Rejected | None] = []
        for k, text in enumerate(texts):
            key = exact_key(text)
            if self.config.exact and key in self._first:
                out.append(Rejected("exact_duplicate", f"exact duplicate of {self._first[key]}"))
                continue
            if self._index is not None:
                found = self._index.matches(sigs[k])
                if found:
                    out.append(Rejected("near_duplicate", f"near duplicate of {self._where[found[0]]}"))
                    continue
                self._index.add(len(self._where), sigs[k])
            self._where.append(where[k])
            self._first.setdefault(key, where[k])
            out.append(None)
        return out


def _existing_texts(path: str, base_dir: Path) -> tuple[list[str], list[str]]:
    """Locations and :func:`record_text` of every usable record of an existing data file (others skipped)."""
    resolved = resolve_path(path, base_dir)
    if not resolved.exists():
        raise AyarError(f"synth.quality.dedup.against: {resolved} does not exist; fix the path or remove it")
    container = container_of(resolved)
    where, texts = [], []
    for number, raw in iter_records(resolved, container):
        if isinstance(raw, RecordError):
            continue
        fmt = detect_format(raw)
        if fmt is None:
            continue
        try:
            record = convert(apply_columns(raw, {}), fmt, str(path), number)
        except RecordError:
            continue
        where.append(location(path, container, number))
        texts.append(record_text(record))
    return where, texts


def output_text(record: dict) -> str:
    """:func:`record_text` of a synthetic record (the same text ``prepare`` deduplicates on)."""
    fmt = "messages" if "messages" in record else "text"
    return record_text(convert(record, fmt, "synthetic", 0))
