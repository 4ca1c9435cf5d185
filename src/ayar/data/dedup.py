"""Exact and near-duplicate detection: normalised-text keys and MinHash LSH (``datasketch``).

Exact duplicates share :func:`exact_key`: a hash of the text after NFC,
Turkish lower-casing and whitespace collapsing. Near-duplicates are pairs whose
word n-gram sets have an estimated Jaccard similarity of at least the
threshold: MinHash signatures (:func:`signatures`) proposed as candidates by
an LSH index (``datasketch.MinHashLSH``), then checked on the signatures
themselves, so LSH's false positives never count.

Records are referred to by their integer index; the first occurrence of a
cluster is kept, later ones are removed and point to it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import regex as re
from datasketch import LeanMinHash, MinHash, MinHashLSH

from ayar.data.clean import tr_casefold

MINHASH_SEED = 1  # fixed: signatures are comparable across runs and with the leakage check
_WORDS = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks


def exact_key(text: str) -> bytes:
    """16-byte key equal for texts that differ only in case, Unicode form or whitespace."""
    return hashlib.blake2b(tr_casefold(text).encode("utf-8"), digest_size=16).digest()


def shingles(text: str, ngram: int) -> set[bytes]:
    """The set of word ``ngram`` s of the case-folded text; a shorter text is one shingle."""
    words = _WORDS.findall(tr_casefold(text))
    if len(words) <= ngram:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + ngram]).encode("utf-8") for i in range(len(words) - ngram + 1)}


def signatures(texts: Sequence[str], num_perm: int, ngram: int) -> list[LeanMinHash]:
    """MinHash signatures of ``texts`` (computed in one vectorised batch)."""
    sets = [shingles(text, ngram) for text in texts]
    return [LeanMinHash(m) for m in MinHash.bulk(sets, num_perm=num_perm, seed=MINHASH_SEED)]


def similarity(a: LeanMinHash, b: LeanMinHash) -> float:
    """Estimated Jaccard similarity: the share of equal signature values."""
    return float(np.count_nonzero(a.hashvalues == b.hashvalues)) / len(a.hashvalues)


class NearIndex:
    """An LSH index whose answers are checked against the threshold on the signatures."""

    def __init__(self, threshold: float, num_perm: int):
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._sigs: dict[int, LeanMinHash] = {}

    def add(self, index: int, signature: LeanMinHash) -> None:
        self._lsh.insert(index, signature, check_duplication=False)
        self._sigs[index] = signature

    def matches(self, signature: LeanMinHash) -> list[int]:
        """Indices in the index at or above the threshold, smallest first."""
        found = (i for i in self._lsh.query(signature))
        return sorted(i for i in found if similarity(self._sigs[i], signature) >= self.threshold)


@dataclass
class DedupResult:
    """What deduplication removed: ``removed[index] = (kept index, "exact" or "near")``."""

    removed: dict[int, tuple[int, str]] = field(default_factory=dict)

    def clusters(self) -> dict[int, list[int]]:
        """Kept index -> removed indices, for clusters with at least one removed record."""
        out: dict[int, list[int]] = {}
        for index, (kept, _) in sorted(self.removed.items()):
            out.setdefault(kept, []).append(index)
        return out

    def count(self, how: str) -> int:
        return sum(1 for _, kind in self.removed.values() if kind == how)


def deduplicate(indices: Iterable[int], keys: Sequence[bytes], sigs: Sequence[LeanMinHash], *, exact: bool,
                near: bool, threshold: float, num_perm: int) -> tuple[DedupResult, NearIndex | None]:
    """Walk ``indices`` in order; a record equal to, or near, an earlier kept one is removed.

    Args:
        indices: record indices in reading order (their ``keys`` and ``sigs`` entries are used).
        keys: :func:`exact_key` per record index.
        sigs: :func:`signatures` per record index.
        exact, near: which kinds of duplicates to remove.

    Returns:
        The result, and the LSH index of the kept records (None when ``near`` is off), which the
        leakage check reuses.
    """
    result = DedupResult()
    first_of_key: dict[bytes, int] = {}
    index = NearIndex(threshold, num_perm) if near else None
    for i in indices:
        if exact and keys[i] in first_of_key:
            result.removed[i] = (first_of_key[keys[i]], "exact")
            continue
        if index is not None:
            found = index.matches(sigs[i])
            if found:
                result.removed[i] = (found[0], "near")
                continue
            index.add(i, sigs[i])
        first_of_key.setdefault(keys[i], i)
    return result, index


def duplicate_pairs(indices: Sequence[int], keys: Sequence[bytes], sigs: Sequence[LeanMinHash], *,
                    threshold: float, num_perm: int, index: NearIndex | None = None) -> list[tuple[int, int]]:
    """Every exact or near-duplicate pair ``(i, j)``, ``i < j``, among ``indices``.

    Args:
        index: an LSH index already holding exactly ``indices`` (from :func:`deduplicate`), or None
            to build one.
    """
    pairs: set[tuple[int, int]] = set()
    by_key: dict[bytes, int] = {}
    for i in indices:
        if keys[i] in by_key:
            pairs.add((by_key[keys[i]], i))
        else:
            by_key[keys[i]] = i
    if index is None:
        index = NearIndex(threshold, num_perm)
        for i in indices:
            index.add(i, sigs[i])
    for j in indices:
        pairs.update((i, j) for i in index.matches(sigs[j]) if i < j)
    return sorted(pairs)
