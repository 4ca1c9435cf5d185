"""Person names from a gazetteer plus Turkish capitalisation, title and suffix rules.

No statistical model is involved (nothing is downloaded). A *run* is a
sequence of capitalised words separated by single spaces ("Ayşe Nur Yılmaz");
greetings, titles, months, provinces and other non-name words break runs
(``data/name_rules.yaml``). A run is a name when:

- it has two to four words and at least one is a known given name or surname
  ("Ahmet Karabacak", "Zeynep KAYA"); an unknown first word at the start of a
  sentence is left out ("Bunu Mehmet'e" -> "Mehmet");
- it is one known given name ("Mehmet"), except a given name that is also an
  ordinary word ("Umut", "Deniz") at the start of a sentence;
- it is one word with a title before or after ("Sayın Yılmaz", "Dr. Kaya",
  "Karabacak Bey") or a known name with an apostrophe suffix ("Yılmaz'dan").

A lone known surname ("Kaya"), or a name that is also a province or a month
("Aydın'dan", "Eylül'de"), scores below the threshold and needs a title or a
context word ("adım", "ismim", "ad soyad"). Hyphenated given names ("Ayşe-Nur")
count as one word. The apostrophe suffix ("'nin", "'e", "'dan") is never part
of the span, so "Ayşe'nin" becomes "[AD_SOYAD]'nin". Lower-case names are
taken only before "bey"/"hanım" ("ahmet bey").
"""

from __future__ import annotations

from dataclasses import dataclass

import regex as re
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from .gazetteer import (
    ambiguous_given_name_keys,
    context_words,
    given_name_keys,
    name_rules,
    provinces,
    surname_keys,
    tr_lower,
)

ENTITY = "PERSON"

# A capitalised word (or two joined by a hyphen, "Ayşe-Nur"), optionally followed by an
# apostrophe suffix ("Ayşe'nin").
_TOKEN = re.compile(r"(?<![\p{L}\p{N}'’-])(\p{Lu}\p{L}*(?:-\p{Lu}\p{L}*)?)(['’]\p{Ll}+)?(?![\p{L}\p{N}-])")
# What may follow "bey"/"hanım" as a suffix, without also matching "beyaz".
_TITLE_SUFFIX = r"(?:efendi)?(?:['’]\p{L}+|[ıiae]|[ıi]n|d[ae]n|t[ae]n|l[ae]|l[ae]r|c[ıi]ğ[ıi]m|c[ıi]m)?(?!\p{L})"
_NEXT_WORD = re.compile(r"\s(\S+)")


def _is_name_shaped(word: str) -> bool:
    """"Ayşe" or "AYŞE"; not "A", "McDonald" or "iPhone"."""
    return len(word) > 1 and (word[1:].islower() or word.isupper())


def _at_sentence_start(text: str, pos: int) -> bool:
    """True when only spaces separate ``pos`` from the start of the text or a sentence break."""
    i = pos - 1
    while i >= 0 and text[i] in " \t":
        i -= 1
    return i < 0 or text[i] in ".!?:;\n\"“(•*-"


@dataclass(frozen=True)
class _Token:
    start: int
    end: int  # end of the word, before any apostrophe suffix
    end_with_suffix: int
    key: str  # Turkish lower case
    has_suffix: bool


class PersonNameRecognizer(LocalRecognizer):
    """Detect Turkish person names (entity ``PERSON``) with the rules in the module docstring."""

    def __init__(self) -> None:
        rules = name_rules()
        self._given = given_name_keys()
        self._surnames = surname_keys()
        self._ambiguous = ambiguous_given_name_keys()
        self._provinces = frozenset(tr_lower(p) for p in provinces().values())
        names = self._given | self._surnames
        # Words that end a run. A province or stopword that is also a name ("Aydın", "Eylül" =
        # September) does not: it joins a run ("Eylül Sarı") but alone needs support (_score_run).
        words = rules["stopwords"] | rules["titles_before"] | rules["titles_after"] | rules["org_markers"]
        self._breakers = (words | {w.rstrip(".") for w in words} | self._provinces) - names  # "Dr." -> "Dr"
        self._weak = (rules["stopwords"] | self._provinces) & names
        self._org_markers = rules["org_markers"]
        titles_before = "|".join(re.escape(t) for t in sorted(rules["titles_before"], key=len, reverse=True))
        titles_after = "|".join(re.escape(t) for t in sorted(rules["titles_after"], key=len, reverse=True))
        self._title_before = re.compile(rf"(?<![\p{{L}}])(?:{titles_before})\s+$")
        self._title_after = re.compile(rf"\s+(?:{titles_after}){_TITLE_SUFFIX}", re.IGNORECASE)
        self._lower_with_title = re.compile(
            rf"(?<![\p{{L}}\p{{N}}'’])((?:\p{{Ll}}+\s)?\p{{Ll}}+)(?=\s+(?:{titles_after}){_TITLE_SUFFIX})")
        super().__init__(supported_entities=[ENTITY], name="PersonNameRecognizer", supported_language="tr",
                         context=list(context_words().get(ENTITY, ())))

    def load(self) -> None:
        """Nothing to load: the gazetteers are read in the constructor."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        """Return PERSON results for ``text`` (``nlp_artifacts`` is not needed)."""
        if entities and ENTITY not in entities:
            return []
        results = []
        for run in self._runs(text):
            first = run[0]
            if (len(run) > 1 and not self._is_known(first.key) and not text[first.start:first.end].isupper()
                    and _at_sentence_start(text, first.start)):
                run = run[1:]  # "Bunu Mehmet'e": capitalised only because it starts the sentence
            score = self._score_run(text, run)
            if score:
                results.append(self._result(run[0].start, run[-1].end, score))
        lowered = text.lower()
        if "bey" not in lowered and "hanım" not in lowered:
            return results  # fast path: no title, so no lower-case name
        for match in self._lower_with_title.finditer(text):  # "ahmet bey", "ayşe yılmaz hanım"
            first, _, last = match.group(1).rpartition(" ")
            if last in self._given or last in self._surnames:
                start = match.start(1) if first in self._given else match.end(1) - len(last)
                results.append(self._result(start, match.end(1), 0.7))
        return results

    def _is_known(self, key: str) -> bool:
        return any(p in self._given or p in self._surnames for p in key.split("-"))

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(entity_type=ENTITY, start=start, end=end, score=score, recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})

    def _runs(self, text: str) -> list[list[_Token]]:
        """Group capitalised name-like words separated by single spaces."""
        runs: list[list[_Token]] = []
        current: list[_Token] = []
        for match in _TOKEN.finditer(text):
            word = match.group(1)
            if not all(_is_name_shaped(part) for part in word.split("-")):
                token = None  # "McDonald", "A": not a name word
            else:
                key = tr_lower(word)
                token = None if key in self._breakers else _Token(
                    match.start(), match.end(1), match.end(), key, match.group(2) is not None)
            joined = (token is not None and current and not current[-1].has_suffix
                      and text[current[-1].end_with_suffix:match.start()] == " ")
            if joined:
                current.append(token)
                continue
            if current:
                runs.append(current)
            current = [token] if token is not None else []
        if current:
            runs.append(current)
        return runs

    def _score_run(self, text: str, run: list[_Token]) -> float:
        """The score of a run per the rules in the module docstring (0 = not a name)."""
        last = run[-1]
        after = text[last.end_with_suffix:last.end_with_suffix + 16]
        next_word = _NEXT_WORD.match(after)
        next_key = tr_lower(re.split(r"['’]", next_word.group(1))[0].rstrip(",;")) if next_word else ""
        if not last.has_suffix and next_key in self._org_markers:
            return 0.0  # "Mustafa Kemal Caddesi", "Deniz Bank"
        title = bool(self._title_before.search(tr_lower(text[max(0, run[0].start - 12):run[0].start]))
                     or (not last.has_suffix and self._title_after.match(after)))
        known = [self._is_known(t.key) for t in run]
        if len(run) > 4:
            return 0.0  # a heading in title case, not a name
        if len(run) >= 2:
            return 0.85 if any(known) else (0.7 if title else 0.0)
        token = run[0]
        if title:
            return 0.8 if known[0] else 0.6
        if token.key in self._weak:
            return 0.35  # "Aydın'dan", "Eylül'de": a place or a month as often as a person
        if token.has_suffix and known[0]:
            return 0.8
        if any(p in self._given for p in token.key.split("-")):
            if token.key not in self._ambiguous:
                return 0.7
            return 0.35 if _at_sentence_start(text, token.start) else 0.6
        if token.key in self._surnames:
            return 0.35
        return 0.0
