"""Cleaning, duplicate detection, the seeded split and the leakage check, on hand-built inputs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ayar.data.clean import clean_text, tr_casefold
from ayar.data.dedup import deduplicate, duplicate_pairs, exact_key, shingles, signatures, similarity
from ayar.data.prepare_config import CleanConfig
from ayar.data.split import assign_splits, cross_pairs, resolve_leakage

# ----------------------------------------------------------------------------- cleaning


def test_clean_text_normalises_without_changing_meaning():
    decomposed = "s\u0327ehir"  # "ş" as s + combining cedilla
    raw = f"  {decomposed}\u00a0 i\u0307zmir\u200b\x07 \t çok\r\n\r\n\r\n\r\nevet  "
    assert clean_text(raw, CleanConfig()) == "şehir izmir çok\n\nevet"
    assert clean_text(raw, CleanConfig(nfc=False, fix_dotted_i=False, remove_control=False, whitespace=False)
                      ) == raw.replace("\r\n", "\n")


def test_turkish_casefold():
    assert tr_casefold("IĞDIR  İZMİR") == "ığdır izmir"
    assert tr_casefold("İstanbul") == tr_casefold("istanbul") != tr_casefold("ıstanbul")
    assert exact_key("Merhaba  DÜNYA") == exact_key("merhaba dünya")


# ----------------------------------------------------------------------------- dedup


def _pair(jaccard_target: float, rng: random.Random) -> tuple[str, str]:
    """Two texts of distinct words whose unigram sets have the given Jaccard similarity."""
    size = 200
    shared = round(2 * size * jaccard_target / (1 + jaccard_target))
    words = [f"w{rng.randrange(10**9)}" for _ in range(2 * size - shared)]
    return " ".join(words[:size]), " ".join(words[:shared] + words[size:])


def test_similarity_estimates_jaccard():
    rng = random.Random(0)
    for target in (0.3, 0.6, 0.9):
        a, b = _pair(target, rng)
        sa, sb = shingles(a, 1), shingles(b, 1)
        assert len(sa & sb) / len(sa | sb) == pytest.approx(target, abs=0.01)
        sig_a, sig_b = signatures([a, b], 256, 1)
        assert similarity(sig_a, sig_b) == pytest.approx(target, abs=0.08)


def test_near_duplicates_are_found_at_the_threshold():
    rng = random.Random(1)
    texts, expected = [], {}
    for target in (0.95, 0.9, 0.6, 0.4):
        for _ in range(3):
            a, b = _pair(target, rng)
            texts += [a, b]
            if target >= 0.9:
                expected[len(texts) - 1] = (len(texts) - 2, "near")
    texts.append(texts[0].upper())  # an exact duplicate after case folding
    expected[len(texts) - 1] = (0, "exact")
    keys, sigs = [exact_key(t) for t in texts], signatures(texts, 256, 1)
    result, _ = deduplicate(range(len(texts)), keys, sigs, exact=True, near=True, threshold=0.8, num_perm=256)
    assert result.removed == expected  # first occurrence kept, later ones point to it
    assert result.clusters()[0] == [1, len(texts) - 1]
    off, _ = deduplicate(range(len(texts)), keys, sigs, exact=True, near=False, threshold=0.8, num_perm=256)
    assert off.removed == {len(texts) - 1: (0, "exact")}


def test_duplicate_pairs_lists_every_pair_once():
    texts = ["bir iki üç dört beş altı yedi sekiz", "BİR iki üç dört beş altı yedi sekiz", "tamamen başka bir cümle"]
    keys, sigs = [exact_key(t) for t in texts], signatures(texts, 128, 2)
    assert duplicate_pairs([0, 1, 2], keys, sigs, threshold=0.8, num_perm=128) == [(0, 1)]


# ----------------------------------------------------------------------------- split


def test_split_is_seeded_and_follows_the_ratios():
    n = 1000
    ids, none = list(range(n)), [None] * n
    a = assign_splits(ids, none, none, (0.8, 0.1, 0.1), seed=3)
    assert a == assign_splits(ids, none, none, (0.8, 0.1, 0.1), seed=3)
    assert a != assign_splits(ids, none, none, (0.8, 0.1, 0.1), seed=4)
    assert Counter(a.values()) == {"train": 800, "val": 100, "test": 100}


def test_groups_never_straddle_splits():
    rng = random.Random(0)
    groups = [f"customer-{rng.randrange(60)}" for _ in range(600)]
    a = assign_splits(range(600), groups, [None] * 600, (0.7, 0.15, 0.15), seed=0)
    split_of_group: dict[str, set[str]] = {}
    for i, g in enumerate(groups):
        split_of_group.setdefault(g, set()).add(a[i])
    assert all(len(s) == 1 for s in split_of_group.values())
    assert set(a.values()) == {"train", "val", "test"}


def test_stratification_keeps_shares_per_stratum():
    strata = ["rare"] * 100 + ["common"] * 900
    a = assign_splits(range(1000), [None] * 1000, strata, (0.8, 0.1, 0.1), seed=0)
    for name, size in (("rare", 100), ("common", 900)):
        counts = Counter(a[i] for i in range(1000) if strata[i] == name)
        assert counts["test"] == pytest.approx(0.1 * size, abs=1)
        assert counts["val"] == pytest.approx(0.1 * size, abs=1)


def test_leakage_move_puts_linked_records_and_their_groups_together():
    assignment = {0: "train", 1: "test", 2: "val", 3: "test", 4: "test"}
    groups = [None, "g", None, "g", None]  # 1 and 3 are one customer
    pairs = [(0, 1), (2, 4)]
    result = resolve_leakage(pairs, assignment, groups, "move")
    assert result.found == [(0, 1), (2, 4)]
    assert assignment == {0: "train", 1: "train", 2: "val", 3: "train", 4: "val"}
    assert result.moved == {1: ("test", "train"), 3: ("test", "train"), 4: ("test", "val")}
    assert result.remaining == 0 and not cross_pairs(pairs, assignment)


def test_leakage_drop_removes_the_later_split_record():
    assignment = {0: "test", 1: "train", 2: "val", 3: "val"}
    result = resolve_leakage([(0, 1), (2, 3)], assignment, [None] * 4, "drop")
    assert result.dropped == {0: 1}
    assert assignment == {1: "train", 2: "val", 3: "val"} and result.remaining == 0
