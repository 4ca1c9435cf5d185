"""Seeded train/val/test split with group and stratify keys, and the cross-split leakage check.

The unit of splitting is a *group*: all records sharing a group value (one
customer's tickets) land in the same split; a record without one is a group of
its own. Within each stratum (the stratify value of a group's first record),
groups are shuffled with the seed and laid end to end; a group goes to the
split in which the middle of its records falls, so the shares follow the
ratios in records, not in groups.

The leakage check looks for exact or near-duplicate pairs whose records are in
different splits and resolves them: ``move`` unites the records linked by such
pairs and by groups, and puts each united set in the earliest split any of its
records is in (train before val before test), so held-out splits only lose
records; ``drop`` removes the later-split record of every pair.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")


def _units(indices: Sequence[int], groups: Sequence[str | None]) -> dict[object, list[int]]:
    """Group value (or the record index itself, for records without one) -> record indices, in order."""
    units: dict[object, list[int]] = {}
    for i in indices:
        key = ("group", groups[i]) if groups[i] is not None else ("record", i)
        units.setdefault(key, []).append(i)
    return units


def assign_splits(indices: Sequence[int], groups: Sequence[str | None], strata: Sequence[str | None],
                  ratios: tuple[float, float, float], seed: int) -> dict[int, str]:
    """Record index -> "train", "val" or "test".

    Args:
        indices: the records to split, in reading order.
        groups: group value per record index (None: the record is its own group).
        strata: stratify value per record index (None is a stratum of its own).
        ratios: shares of train, val and test (summing to 1).
        seed: the split is a pure function of the inputs and the seed.
    """
    by_stratum: dict[str | None, list[list[int]]] = defaultdict(list)
    for members in _units(indices, groups).values():
        by_stratum[strata[members[0]]].append(members)
    rng = random.Random(seed)
    bounds = (ratios[0], ratios[0] + ratios[1])
    out: dict[int, str] = {}
    for stratum in sorted(by_stratum, key=lambda s: (s is None, str(s))):
        units = by_stratum[stratum]
        rng.shuffle(units)
        total = sum(len(u) for u in units)
        done = 0
        for members in units:
            middle = (done + len(members) / 2) / total
            name = "train" if middle < bounds[0] else "val" if middle < bounds[1] else "test"
            out.update((i, name) for i in members)
            done += len(members)
    return out


def cross_pairs(pairs: Sequence[tuple[int, int]], assignment: dict[int, str]) -> list[tuple[int, int]]:
    """The pairs whose two records are both assigned, to different splits."""
    return [(i, j) for i, j in pairs if i in assignment and j in assignment and assignment[i] != assignment[j]]


@dataclass
class LeakageResult:
    """Pairs found across splits, and what was done: ``moved[i] = (from, to)``, ``dropped[i] = partner``."""

    found: list[tuple[int, int]]
    moved: dict[int, tuple[str, str]] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)
    remaining: int = 0


def resolve_leakage(pairs: Sequence[tuple[int, int]], assignment: dict[int, str], groups: Sequence[str | None],
                    how: str) -> LeakageResult:
    """Find the cross-split ``pairs`` and resolve them in ``assignment`` (changed in place).

    Args:
        pairs: every exact or near-duplicate pair among the assigned records.
        assignment: record index -> split, from :func:`assign_splits`.
        groups: group value per record index, so ``move`` keeps groups whole.
        how: "move" or "drop".
    """
    result = LeakageResult(found=cross_pairs(pairs, assignment))
    if not result.found:
        return result
    if how == "drop":
        order = {name: k for k, name in enumerate(SPLITS)}
        for i, j in result.found:
            if i in assignment and j in assignment and assignment[i] != assignment[j]:
                later, partner = (i, j) if order[assignment[i]] > order[assignment[j]] else (j, i)
                result.dropped[later] = partner
                del assignment[later]
    else:
        _move(result, pairs, assignment, groups)
    result.remaining = len(cross_pairs(pairs, assignment))
    return result


def _move(result: LeakageResult, pairs: Sequence[tuple[int, int]], assignment: dict[int, str],
          groups: Sequence[str | None]) -> None:
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        parent[find(i)] = find(j)

    for i, j in pairs:
        if i in assignment and j in assignment:
            union(i, j)
    for members in _units(list(assignment), groups).values():
        for i in members[1:]:
            union(members[0], i)
    components: dict[int, list[int]] = defaultdict(list)
    for i in parent:
        components[find(i)].append(i)
    for members in components.values():
        target = min((assignment[i] for i in members), key=SPLITS.index)
        for i in members:
            if assignment[i] != target:
                result.moved[i] = (assignment[i], target)
                assignment[i] = target
