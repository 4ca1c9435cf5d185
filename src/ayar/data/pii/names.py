"""Person names from a gazetteer plus Turkish context rules, in any letter case.

No statistical model is involved (nothing is downloaded). Every word is looked
up, after Turkish lower-casing, in the bundled gazetteer (``gazetteer.py``:
thousands of given names and surnames) and sorted into: a *given name*, a
*surname*, a name that is *also an ordinary word* ("deniz", "umut", "kaya",
"güneş", from a Turkish lexicon), or unknown. A *run* is a sequence of name
words separated by single spaces: known names in any case ("ayşe nur yıldız",
"AYŞE NUR YILDIZ") and unknown words written capitalised ("Ahmet Karabacak");
greetings, titles, months, provinces and other non-name words break runs
(``data/name_rules.yaml``). A run is a name when:

- it has two to four words and one is a given name or surname that is not also
  a word ("tuğba kaya", "Ahmet Karabacak"), or it is a given name then a
  surname, all known ("Deniz Kaya");
- it is one given name that is not also a word ("Ecrin", "alperen");
- a *cue* supports it: a title before or after ("Sn. Kaya", "Dr. Umut",
  "barış bey"), a greeting, an introduction or a closing before ("merhaba
  deniz,", "ben umut.", "adım Bahar", "Saygılarımla, Güneş"), an apostrophe
  case suffix ("Deniz'e", "umut'un"), or a verb of speaking or writing after
  ("deniz aradı", "Umut yazdı").

Capitalisation alone is weak evidence: a capitalised name-word mid-sentence
("Bugün Deniz geldi") passes, the same word at the start of a sentence
("Deniz manzaralı oda", "Güneş kremi") or in upper-case text does not, and a
lone surname-word ("Kaya gibi sağlam") never does without a cue. A name that is
also a province or month ("Aydın'dan", "Eylül'de") needs a title or context
word ("adım", "ismim", "ad soyad"). The apostrophe suffix is never part of the
span: "Ayşe'nin" becomes "[AD_SOYAD]'nin".
"""

from __future__ import annotations

from dataclasses import dataclass

import regex as re
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from .gazetteer import (
    common_given_name_keys,
    context_words,
    given_name_keys,
    name_rules,
    name_word_keys,
    provinces,
    surname_keys,
    tr_lower,
)

ENTITY = "PERSON"

# A word (or two joined by a hyphen, "Ayşe-Nur"), optionally followed by an apostrophe suffix.
_WORD = re.compile(r"(?<![\p{L}\p{N}'’-])(\p{L}+(?:-\p{L}+)?)(['’]\p{L}+)?(?![\p{L}\p{N}-])")
# What may follow "bey"/"hanım" as a suffix, without also matching "beyaz".
_TITLE_SUFFIX = r"(?:efendi)?(?:['’]\p{L}+|[ıiae]|[ıi]n|d[ae]n|t[ae]n|l[ae]|l[ae]r|c[ıi]ğ[ıi]m|c[ıi]m)?(?!\p{L})"
_NEXT_WORD = re.compile(r"[ \t]+(\S+)")
# Endings of Turkish surnames: an unknown lower-case word with one, right after a given name, is its surname.
# A past-tense verb or "teslim"/"şikayetçi" after an unknown word: it ends the subject ("... karadağ teslim aldı").
_PAST_VERB = re.compile(r"(?:teslim|şikayetçi|\p{L}+[dt][ıiuü](?:r|m|k|n|niz|nız|lar|ler)?)(?!\p{L})")
_SURNAME_SHAPE = re.compile(r"(?:oğlu|oğulları|soy|türk|tekin|kaya|taş|demir|doğan|yılmaz|kurt|yiğit|gül|dağ)$")

# Scores (analyzer threshold 0.5; a PERSON context word adds 0.4, see context.py).
STRONG, SINGLE, CUED, CAPITALISED, NEEDS_CONTEXT, WORD = 0.85, 0.7, 0.8, 0.55, 0.35, 0.05


def _is_name_shaped(word: str) -> bool:
    """"Ayşe", "AYŞE" or "ayşe"; not "A", "McDonald" or "iPhone"."""
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
    cased: bool  # "Ayşe" (title case); not "ayşe" or "AYŞE"
    given: bool
    surname: bool
    word: bool  # the name is also an ordinary word ("deniz", "kaya")
    guessed: bool = False  # an unknown word taken as the surname of the given name before it

    @property
    def known(self) -> bool:
        return self.given or self.surname

    @property
    def strong(self) -> bool:
        return self.known and not self.word and not self.guessed


def _alternatives(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


class PersonNameRecognizer(LocalRecognizer):
    """Detect Turkish person names (entity ``PERSON``) with the rules in the module docstring."""

    def __init__(self) -> None:
        rules = name_rules()
        self._given = given_name_keys()
        self._common_given = common_given_name_keys()
        self._surnames = surname_keys()
        self._words = name_word_keys()
        names = self._names = self._given | self._surnames
        provinces_ = frozenset(tr_lower(p) for p in provinces().values())
        # Words that end a run. A province or stopword that is also a name ("Aydın", "Eylül" =
        # September) does not: it joins a run ("Eylül Sarı") but alone needs support (_score_run).
        # Titles, introductions and organisation words always end a run, even the odd one that is
        # also in the gazetteer ("Sayın", "Alıcı").
        always = rules["titles_before"] | rules["titles_after"] | rules["org_markers"] | rules["intro_strong"]
        always |= {w.rstrip(".") for w in always}
        self._breakers = always | ((rules["stopwords"] | provinces_ | rules["verbs_after"]) - names)
        self._weak = (rules["stopwords"] | provinces_) & names
        self._org_markers = rules["org_markers"]
        self._title_before = re.compile(rf"(?<![\p{{L}}])(?:{_alternatives(rules['titles_before'])})\s*$")
        self._title_after = re.compile(rf"[ \t]+(?:{_alternatives(rules['titles_after'])}){_TITLE_SUFFIX}",
                                       re.IGNORECASE)
        self._strong_before = re.compile(rf"(?<![\p{{L}}])(?:{_alternatives(rules['intro_strong'])})[\s,:;.!-]*$")
        self._weak_before = re.compile(rf"(?<![\p{{L}}])(?:{_alternatives(rules['intro_weak'])})[ \t]*[,:;!-]?\s*$")
        # A title, then one word that is not a known name (those are runs): "sn. yavuzer", "DR. KALKAVAN".
        # An abbreviation's full stop may touch the name ("dr.kalkavan"); a bare title needs a space ("drenaj").
        dotted = [t for t in rules['titles_before'] if t.endswith(".")]
        bare = [t for t in rules['titles_before'] if not t.endswith(".")]
        self._after_title = re.compile(rf"(?<![\p{{L}}])(?:(?:{_alternatives(dotted)})[ \t]*|(?:{_alternatives(bare)})[ \t]+)"
                                       rf"(\p{{L}}{{3,}})(?![\p{{L}}\p{{N}}-])")
        self._verb_after = re.compile(rf"(?:{_alternatives(rules['verbs_after'])})(?!\p{{L}})")
        self._lower_with_title = re.compile(
            rf"(?<![\p{{L}}\p{{N}}'’])((?:\p{{Ll}}+\s)?\p{{Ll}}+)(?=\s+(?:{_alternatives(rules['titles_after'])})"
            rf"{_TITLE_SUFFIX})")
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
            if run[-1].guessed and not (self._ends_name(text, run[-1]) or self._cue_before(text, run[0])):
                run = run[:-1]  # "ahmet geldi mi": not a surname
            first = run[0]
            if (len(run) > 1 and not first.known and not text[first.start:first.end].isupper()
                    and _at_sentence_start(text, first.start) and not self._cue_before(text, first)):
                run = run[1:]  # "Bunu Mehmet'e": capitalised only because it starts the sentence
            score = self._score_run(text, run)
            if score:
                results.append(self._result(run[0].start, run[-1].end, score))
        folded = tr_lower(text)  # same length as text for Turkish
        if len(folded) == len(text):
            for match in self._after_title.finditer(folded):  # "sn. yavuzer", "SAYIN KALKAVAN"
                word = match.group(1)
                if word not in self._breakers and word not in self._given and word not in self._surnames:
                    results.append(self._result(match.start(1), match.end(1), CUED))
        lowered = text.lower()
        if "bey" not in lowered and "hanım" not in lowered:
            return results  # fast path: no title, so no unknown lower-case name
        for match in self._lower_with_title.finditer(text):  # "karabacak bey", "ayşe yılmaz hanım"
            first, _, last = match.group(1).rpartition(" ")
            if tr_lower(last) in self._breakers:
                continue
            start = match.start(1) if first in self._given else match.end(1) - len(last)
            results.append(self._result(start, match.end(1), CUED))
        return results

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(entity_type=ENTITY, start=start, end=end, score=score, recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: self.name, RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})

    def _token(self, match: re.Match) -> _Token | None:
        """The word of ``match`` as a name word, or None when it can not be part of a name."""
        word = match.group(1)
        if word.islower():  # most words: lower case already has no "I"/"İ", so it is its own key
            if word not in self._names and "-" not in word:
                return None  # an unknown lower-case word (the fast path)
            key = word
        else:
            key = tr_lower(word)
        if key in self._breakers or not all(_is_name_shaped(part) for part in word.split("-")):
            return None  # a stopword or title; "McDonald", "A": not a name word
        parts = key.split("-")
        given = any(p in self._given for p in parts)
        surname = not given and any(p in self._surnames for p in parts) or key in self._surnames
        cased = word[0].isupper() and not word.isupper()
        if not (given or surname or word[0].isupper()):
            return None  # an unknown lower-case word
        return _Token(match.start(), match.end(1), match.end(), key, match.group(2) is not None, cased,
                      given, surname, all(p in self._words for p in parts))

    def _runs(self, text: str) -> list[list[_Token]]:
        """Group name words separated by single spaces."""
        runs: list[list[_Token]] = []
        current: list[_Token] = []
        for match in _WORD.finditer(text):
            token = self._token(match)
            if token is not None and not token.known and not token.cased:
                token = None  # an unknown upper-case word: only as a guessed surname (below)
            if token is None and current and current[-1].given and not current[-1].guessed:
                token = self._guessed_surname(match, current[-1], text)
            joined = (token is not None and current and not current[-1].has_suffix
                      and text[current[-1].end_with_suffix:match.start()] == " "
                      # a change between lower case and title case ends a run: "Deniz Kaya demir döküm",
                      # "eşim Banu" (my wife Banu)
                      and not ((current[-1].cased and match.group(1).islower())
                               or (token.cased and text[current[-1].start:current[-1].end].islower())))
            if joined:
                current.append(token)
                continue
            if current:
                runs.append(current)
            current = [token] if token is not None and not token.guessed else []
        if current:
            runs.append(current)
        return runs

    def _guessed_surname(self, match: re.Match, previous: _Token, text: str) -> _Token | None:
        """An unknown lower- or upper-case word right after a sure given name, as its possible surname
        ("tuğba karabacak", "AYŞE KARABACAK"); kept only if it ends the name (see ``_ends_name``)."""
        key = tr_lower(match.group(1))
        if (previous.has_suffix or len(key) < 3 or key in self._breakers or key in self._words
                or text[previous.end_with_suffix:match.start()] != " "):
            return None
        return _Token(match.start(), match.end(1), match.end(), key, match.group(2) is not None, False,
                      False, True, False, guessed=True)

    def _ends_name(self, text: str, token: _Token) -> bool:
        """A guessed surname is one when shaped like one, or followed by a suffix, a title, a speaking
        verb or the end of the phrase ("ben tuğba karabacak,", "tuğba karabacak'a", "... hanım")."""
        if token.has_suffix or _SURNAME_SHAPE.search(token.key):
            return True
        after = text[token.end_with_suffix:token.end_with_suffix + 24]
        next_words = tr_lower(after).lstrip(" \t") if after[:1] in " \t" else ""
        if self._title_after.match(after) or (next_words and (self._verb_after.match(next_words)
                                                             or _PAST_VERB.match(next_words))):
            return True
        return not after.strip() or after.lstrip(" \t")[:1] in ",.!?;:\n)"

    def _cue_before(self, text: str, first: _Token) -> bool:
        """A title or an introduction right before ``first`` ("Sn.", "adım", "ad soyad:")."""
        before = tr_lower(text[max(0, first.start - 24):first.start])
        return bool(self._title_before.search(before) or self._strong_before.search(before))

    def _cue(self, text: str, run: list[_Token], suffix_counts: bool = True) -> bool:
        """A title, greeting, introduction, closing, suffix or speaking verb supports ``run`` as a name."""
        first, last = run[0], run[-1]
        before = tr_lower(text[max(0, first.start - 24):first.start])
        after = text[last.end_with_suffix:last.end_with_suffix + 24]
        if self._cue_before(text, first):
            return True
        if last.has_suffix:
            return suffix_counts
        if self._title_after.match(after):
            return True
        if after[:1] in " \t" and self._verb_after.match(tr_lower(after).lstrip(" \t")):
            return True
        # "merhaba deniz," / "ben umut." / a signature line: the run must end the phrase.
        ends_phrase = not after.strip() or after.lstrip(" \t")[:1] in ",.!?;:\n)"
        if ends_phrase and self._weak_before.search(before):
            return True
        line_start = text.rfind("\n", 0, first.start) + 1
        return ends_phrase and not any(t.guessed for t in run) and line_start > 0 and not text[line_start:first.start].strip() and (
            not text[last.end_with_suffix:].strip())

    def _score_run(self, text: str, run: list[_Token]) -> float:
        """The score of a run per the rules in the module docstring (0 = not a name)."""
        last = run[-1]
        next_word = _NEXT_WORD.match(text, last.end_with_suffix)
        next_key = tr_lower(re.split(r"['’]", next_word.group(1))[0].rstrip(",;")) if next_word else ""
        if not last.has_suffix and next_key in self._org_markers:
            return 0.0  # "Mustafa Kemal Caddesi", "Deniz Bank"
        if len(run) > 4:
            return 0.0  # a heading in title case, not a name
        if len(run) == 1 and not last.known and last.key not in self._weak:
            # One unknown capitalised word (most runs): a name only after or before a title
            # ("Sayın Karabacak", "Karabacak Bey"); checked cheaply.
            titled = self._cue_before(text, last) or (not last.has_suffix
                                                      and self._title_after.match(text, last.end_with_suffix))
            return SINGLE if titled and last.cased else 0.0
        cue = self._cue(text, run)
        if len(run) >= 2:
            if any(t.strong for t in run):
                return STRONG
            if run[0].given and run[1].given and last.surname and len(run) >= 3:
                return STRONG  # two given names and a surname: "defne dilan kızıltepe"
            if all(t.known for t in run) and run[0].given and last.surname and not last.guessed and (
                    run[0].key in self._common_given or all(t.cased for t in run)):
                return STRONG  # "Deniz Kaya", "umut demir"
            if cue:
                return STRONG if any(t.known for t in run) else (SINGLE if any(t.cased for t in run) else 0.0)
            if run[0].given and all(t.cased for t in run) and not _at_sentence_start(text, run[0].start):
                return CAPITALISED  # "dün Deniz Karabacak geldi"
            return WORD
        return self._score_single(text, last, cue)

    def _score_single(self, text: str, token: _Token, cue: bool) -> float:
        if token.key in self._weak or not token.known:
            # "Aydın'dan", "Eylül'de": a place or a month as often as a person, "İstanbul'a" a place:
            # a title or greeting still counts, the suffix alone does not.
            if token.has_suffix and cue:
                cue = self._cue(text, [token], suffix_counts=False)
            if token.known:
                return CUED if cue else NEEDS_CONTEXT
            return SINGLE if cue and token.cased else 0.0
        if token.given and not token.word:
            return CUED if cue else SINGLE
        if cue:
            return CUED
        if token.given and token.cased and not _at_sentence_start(text, token.start):
            return CAPITALISED  # "Bugün Deniz geldi"
        return NEEDS_CONTEXT if token.surname and not token.word else WORD
