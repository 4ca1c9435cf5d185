"""Synthetic and human records in one dataset: a target share, and the shares reached.

A record is synthetic when its source line carries ``meta.synthetic`` (what ``ayar synth`` writes:
teacher, endpoint, task, prompt hash, time); ``prepare`` keeps that provenance in the record's
``meta``. With ``prepare.synthetic_share`` set (0.7 for the common 70% synthetic / 30% human mix),
the side in excess is subsampled, seeded, after deduplication and before the split, so that the
kept records hold the target share as closely as whole records allow; every record left out is in
``rejects.jsonl`` (reason ``mixed_out``). The data card reports the target and the share reached in
each split.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

SPLITS = ("train", "val", "test")


def mix_out(kept: Sequence[int], synthetic: Sequence[bool], share: float | None, seed: int) -> set[int]:
    """Records of ``kept`` to leave out so the synthetic share is ``share`` (None: none left out).

    With S synthetic and H human records, when S / (S + H) is above the target, round(share * H / (1 - share))
    synthetic records are kept (all when share is 1, as long as there are human records to drop); otherwise
    round(S * (1 - share) / share) human ones. The choice among a side is a seeded random sample.
    """
    if share is None:
        return set()
    syn = [i for i in kept if synthetic[i]]
    hum = [i for i in kept if not synthetic[i]]
    if not syn and not hum:
        return set()
    current = len(syn) / (len(syn) + len(hum))
    if current > share:
        keep = len(syn) if share == 1 else round(share * len(hum) / (1 - share))
        side, rng = syn, random.Random(f"mix:{seed}:synthetic")
    elif current < share:
        keep = len(hum) if share == 0 else round(len(syn) * (1 - share) / share)
        side, rng = hum, random.Random(f"mix:{seed}:human")
    else:
        return set()
    keep = min(keep, len(side))
    chosen = set(rng.sample(side, keep))
    return {i for i in side if i not in chosen}


def mix_report(share: float | None, synthetic: Sequence[bool], kept_before: Sequence[int], left_out: set[int],
               assignment: dict[int, str]) -> dict[str, Any] | None:
    """The manifest's ``mix``: target, counts before and after, and the share per split (distinct records).

    None when there are no synthetic records and no target.
    """
    if share is None and not any(synthetic[i] for i in kept_before):
        return None
    by_split = {name: {"synthetic": 0, "human": 0} for name in SPLITS}
    for i, split in assignment.items():
        by_split[split]["synthetic" if synthetic[i] else "human"] += 1
    for counts in by_split.values():
        total = counts["synthetic"] + counts["human"]
        counts["synthetic_share"] = round(counts["synthetic"] / total, 4) if total else None
    syn_before = sum(1 for i in kept_before if synthetic[i])
    return {"target_synthetic_share": share,
            "before": {"synthetic": syn_before, "human": len(kept_before) - syn_before},
            "left_out": {"synthetic": sum(1 for i in left_out if synthetic[i]),
                         "human": sum(1 for i in left_out if not synthetic[i])},
            "by_split": by_split}


def card_lines(mix: dict[str, Any] | None) -> list[str]:
    """The data card's section on synthetic and human records (empty without synthetic records or target)."""
    if mix is None:
        return []
    target = mix["target_synthetic_share"]
    rows = [f"| {name} | {c['synthetic']} | {c['human']} | "
            f"{'' if c['synthetic_share'] is None else format(c['synthetic_share'], '.1%')} |"
            for name, c in mix["by_split"].items()]
    left = mix["left_out"]
    return ["", "## Synthetic and human data", "",
            "Records written by a teacher model (`ayar synth`) keep their origin in `meta.synthetic` (teacher, "
            "endpoint, task, prompt hash, time).", "",
            f"- Target synthetic share: **{'none (all kept)' if target is None else format(target, '.0%')}**.",
            f"- Before mixing: {mix['before']['synthetic']} synthetic, {mix['before']['human']} human records; "
            f"left out to reach the target: {left['synthetic']} synthetic, {left['human']} human "
            "(`rejects.jsonl`, reason `mixed_out`).", "",
            "| split | synthetic | human | synthetic share |", "| --- | --- | --- | --- |", *rows, ""]
