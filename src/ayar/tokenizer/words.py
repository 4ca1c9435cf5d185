"""Turkish-aware words: where they are in a text, and how to group their spellings.

A word is a run of letters, with the suffixes Turkish writes after an apostrophe
kept on it ("İstanbul'da", "Ayşe’nin", "TBMM'ye" are one word each: the
apostrophe only marks where a proper noun ends). Digits, punctuation and
whitespace are not words. Case folding follows Turkish rules (I -> ı, İ -> i),
so "İSTANBUL'DA" and "İstanbul'da" count as the same word and "IŞIK" folds to
"ışık", not "işik".
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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
