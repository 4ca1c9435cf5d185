"""Turkish context words: raise a match's score when a supporting word is near it.

Presidio's default ``LemmaContextAwareEnhancer`` compares spaCy lemmas, which a
blank Turkish pipeline does not produce, and Turkish attaches suffixes to the
word it supports ("kartımın numarası", "vergi numaram"). This enhancer instead
looks, in a character window around each match, for a word that *starts with*
one of the recognizer's context words, on Turkish lower-cased text with ı folded to i.

Recognizers whose matches are ambiguous on their own (a 10-digit VKN, an
ungrouped card number, a date) score below the analyzer's threshold and only
pass it with a context word: that is how "context required" is expressed.
"""

from __future__ import annotations

from collections.abc import Iterable

import regex as re
from presidio_analyzer import EntityRecognizer, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts

from .gazetteer import tr_lower

# Characters of the window before and after a match searched for context words.
WINDOW_BEFORE = 40
WINDOW_AFTER = 15
# Score added by a context word (capped at 1.0); the analyzer threshold is 0.5 by default.
CONTEXT_BOOST = 0.4


def fold(text: str) -> str:
    """Turkish lower case with dotless ı folded to i, length-preserving for Turkish text.

    Both sides of a context match are folded, so "IBAN" (Turkish lower case "ıban") matches
    "iban" and "KARTIMIN" matches "kart".
    """
    return tr_lower(text).replace("ı", "i")


def context_pattern(words: Iterable[str]) -> re.Pattern | None:
    """A regex finding any of ``words`` at the start of a word of :func:`fold` -ed text."""
    words = sorted({fold(w) for w in words}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![\p{{L}}\p{{N}}])(?:{alternatives})")


class TurkishContextEnhancer(ContextAwareEnhancer):
    """Boost results whose recognizer's context words appear near them (by word prefix).

    Args:
        boost: score added to a result with a context word, capped at 1.0.
        window_before: characters before the match searched.
        window_after: characters after the match searched (for "1985 doğumlu").
    """

    def __init__(self, boost: float = CONTEXT_BOOST, window_before: int = WINDOW_BEFORE,
                 window_after: int = WINDOW_AFTER):
        super().__init__(context_similarity_factor=boost, min_score_with_context_similarity=0.0,
                         context_prefix_count=0, context_suffix_count=0)
        self.window_before = window_before
        self.window_after = window_after
        self._patterns: dict[str, re.Pattern | None] = {}

    def _pattern_for(self, recognizer: EntityRecognizer) -> re.Pattern | None:
        if recognizer.id not in self._patterns:
            self._patterns[recognizer.id] = context_pattern(recognizer.context or [])
        return self._patterns[recognizer.id]

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts | None,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        """Return ``raw_results`` with boosted scores where a context word is found.

        ``context`` holds extra words that count as found for every result,
        e.g. the JSON key of the field being analysed ("vergi_no").
        """
        by_id = {r.id: r for r in recognizers}
        extra = fold(" ".join(context or []).replace("_", " "))
        lowered: str | None = None  # the whole text lower-cased once, only if needed
        for result in raw_results:
            metadata = result.recognition_metadata or {}
            recognizer = by_id.get(metadata.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY))
            if recognizer is None or metadata.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            pattern = self._pattern_for(recognizer)
            if pattern is None:
                continue
            if lowered is None:
                # Folding keeps the length of Turkish text, so offsets stay aligned.
                lowered = fold(text)
                if len(lowered) != len(text):
                    lowered = "".join(fold(c)[:1] or c for c in text)
            # A context word supports the nearest match only: "Doğum tarihi: 12.03.1985, randevu
            # 15.04.2024" -- the window stops at the previous/next match of the same entity type.
            same = [r for r in raw_results if r.entity_type == result.entity_type
                    and (r.end <= result.start or r.start >= result.end)]
            lo = max([result.start - self.window_before, 0] + [r.end for r in same if r.end <= result.start])
            hi = min([result.end + self.window_after] + [r.start for r in same if r.start >= result.end])
            # Search the whole string between bounds so the word-start lookbehind sees real text.
            after = getattr(recognizer, "CONTEXT_AFTER", True)  # health numbers: the word comes first
            found = (pattern.search(lowered, lo, result.start) or (after and pattern.search(lowered, result.end, hi))
                     or (extra and pattern.search(extra)))
            if found:
                result.score = min(ContextAwareEnhancer.MAX_SCORE, result.score + self.context_similarity_factor)
                metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
                result.recognition_metadata = metadata
                if result.analysis_explanation is not None:
                    result.analysis_explanation.set_supportive_context_word(found.group(0))
                    result.analysis_explanation.set_improved_score(result.score)
        return raw_results
