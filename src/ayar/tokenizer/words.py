"""Turkish-aware words: where they are in a text, and how to group their spellings.

A word is a run of letters, with the suffixes Turkish writes after an apostrophe
kept on it ("İstanbul'da", "Ayşe’nin", "TBMM'ye" are one word each: the
apostrophe only marks where a proper noun ends). Digits, punctuation and
whitespace are not words. Case folding follows Turkish rules (I -> ı, İ -> i),
so "İSTANBUL'DA" and "İstanbul'da" count as the same word and "IŞIK" folds to
"ışık", not "işik".

:func:`turkish_share` is the project's language check (``synth`` rejects replies with it, ``plan``
judges a tokenizer's figures by it): how many words are frequent Turkish function words
(``turkish_words.txt``) or hold a letter of the Turkish alphabet that English lacks.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from importlib import resources

from ayar.data.clean import tr_casefold
from ayar.data.pii.gazetteer import tr_lower

# letters = word characters that are neither digits nor "_"; apostrophes: ASCII ' and typographic ’ (U+2019).
WORD_RE = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def word_spans(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` character offsets of every word of ``text``, in order."""
    for match in WORD_RE.finditer(text):
        yield match.span()


def split_words(text: str) -> list[str]:
    """The words of ``text`` as written (see the module docstring for what a word is)."""
    return [text[a:b] for a, b in word_spans(text)]


def fold(word: str) -> str:
    """The form words are grouped by: Turkish lower case, typographic apostrophe as ASCII."""
    return tr_lower(word.replace("’", "'"))


TURKISH_SHARE = 0.25  # a text is Turkish when at least this share of its words look Turkish
_TURKISH_LETTERS = frozenset("çğıöşü")


@functools.lru_cache(maxsize=1)
def turkish_words() -> frozenset[str]:
    text = resources.files("ayar.tokenizer").joinpath("turkish_words.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def turkish_share(text: str) -> float:
    """Share of the words of ``text`` that are Turkish function words or hold a Turkish letter (0 with no words)."""
    words = split_words(tr_casefold(text))
    if not words:
        return 0.0
    common = turkish_words()
    hits = sum(1 for w in words if w in common or not _TURKISH_LETTERS.isdisjoint(w))
    return hits / len(words)
