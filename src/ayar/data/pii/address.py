"""Turkish street addresses, assembled from their typical components.

An address is written as a chain of components separated by spaces, commas or
dashes: "Atatürk Mah. Gül Sk. No: 12 D: 5 Kadıköy/İstanbul". The recognizer
finds the components, chains neighbours that are at most three separator
characters apart, and reports a chain as an ``ADDRESS`` when it holds a street
or building part (Mah., Sk., Cad., Bulvarı, Apartmanı, ...) and at least one
more component. A street name alone ("Bağdat Caddesi'nde trafik var") is a
public place, not a personal address, and is not reported.
"""

from __future__ import annotations

import regex as re
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from .gazetteer import context_words, name_rules, provinces, tr_lower, tr_upper

ENTITY = "ADDRESS"

_CAP = r"\p{Lu}\p{Ll}+"
_NAME_WORD = rf"(?:{_CAP}|\d{{1,5}}\.?)"  # "Atatürk", "1234." (numbered streets)
_STREET_KINDS = ("Mahallesi", "Mah.", "Mh.", "Sokağı", "Sokak", "Sok.", "Sk.", "Caddesi", "Cadde", "Cad.", "Cd.",
                 "Bulvarı", "Blv.", "Bulv.", "Meydanı", "Küme Evleri")
_BUILDING_KINDS = ("Apartmanı", "Apt.", "Sitesi", "Plaza", "Rezidans", "İş Merkezi")


def _kinds(words: tuple[str, ...]) -> str:
    # Each kind as written, in lower case and in upper case ("Mah.", "mah.", "MAH.").
    variants = {v for w in words for v in (w, tr_lower(w), tr_upper(w))}
    return "|".join(re.escape(v).replace(r"\ ", r"\s") for v in sorted(variants, key=len, reverse=True))


def _component_regex() -> re.Pattern:
    names = sorted(provinces().values(), key=len, reverse=True)
    province = "|".join(re.escape(v) for n in names for v in (n, tr_upper(n)))
    parts = {
        "street": rf"(?:{_NAME_WORD}\s){{1,3}}(?:{_kinds(_STREET_KINDS)})(?!\p{{L}})",
        "building": rf"(?:{_NAME_WORD}\s){{1,3}}(?:{_kinds(_BUILDING_KINDS)})(?!\p{{L}})",
        "number": r"(?<!\p{L})(?:No|NO|no|Numara)\s?[:.]?\s?\d{1,5}[A-Za-z]?(?:\s?/\s?\d{1,4}[A-Za-z]?)?(?!\w)",
        "unit": r"(?<!\p{L})(?:(?:Daire|DAİRE|daire|Kat|KAT|kat|Blok|D|K)\s?[:.]\s?\d{1,4}"
                r"|(?:Daire|daire|Kat|kat)\s\d{1,4}|\p{Lu}\sBlok)(?!\w)",
        "district": rf"(?<!\p{{L}})(?:{_CAP}\s?/\s?\p{{Lu}}\p{{L}}+|{_CAP}(?:,\s?|\s)(?:{province})|(?:{province}))"
                    rf"(?!\p{{L}})",
        "postal": r"(?<!\d)\d{5}(?!\d)",
    }
    return re.compile("|".join(f"(?P<{kind}>{regex})" for kind, regex in parts.items()))


_GAP = re.compile(r"[\s,;-]{0,3}")


def _kind_regex() -> re.Pattern:
    # Every address holds a street or building kind ("Mah.", "Sokak", "Apt."): found first, fast.
    return re.compile(rf"(?<!\p{{L}})(?:{_kinds(_STREET_KINDS + _BUILDING_KINDS)})(?!\p{{L}})")


# Characters searched for address components before the first and after the last kind word.
_REACH_BEFORE = 80
_REACH_AFTER = 160


class AddressRecognizer(LocalRecognizer):
    """Detect street addresses (entity ``ADDRESS``), see the module docstring."""

    def __init__(self) -> None:
        self._components = _component_regex()
        self._kind = _kind_regex()
        self._stopwords = name_rules()["stopwords"]
        super().__init__(supported_entities=[ENTITY], name="AddressRecognizer", supported_language="tr",
                         context=list(context_words().get(ENTITY, ())))

    def load(self) -> None:
        """Nothing to load: the component regex is built in the constructor."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        """Return ADDRESS results for ``text`` (``nlp_artifacts`` is not needed)."""
        if entities and ENTITY not in entities:
            return []
        kinds = list(self._kind.finditer(text))
        if not kinds:
            return []
        # The component regex is slow; run it only around the kind words.
        lo, hi = max(0, kinds[0].start() - _REACH_BEFORE), kinds[-1].end() + _REACH_AFTER
        results = []
        chain: list[re.Match] = []
        for match in self._components.finditer(text, lo, hi):
            if chain and not _GAP.fullmatch(text, chain[-1].end(), match.start()):
                results.extend(self._chain_result(text, chain))
                chain = []
            chain.append(match)
        results.extend(self._chain_result(text, chain))
        return results

    def _chain_result(self, text: str, chain: list[re.Match]) -> list[RecognizerResult]:
        kinds = [m.lastgroup for m in chain]
        if len(chain) < 2 or not ({"street", "building"} & set(kinds)):
            return []
        start = self._skip_leading_stopwords(text, chain[0].start(), chain[0].end())
        return [RecognizerResult(entity_type=ENTITY, start=start, end=chain[-1].end(), score=0.85,
                                 recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                       RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})]

    def _skip_leading_stopwords(self, text: str, start: int, end: int) -> int:
        """Move the start past words like "Merhaba" that the street regex swallowed, as long as
        a name word is left before the street kind ("Cumhuriyet Mahallesi" keeps "Cumhuriyet")."""
        while True:
            word, space, _ = text[start:end].partition(" ")
            after = start + len(word) + 1
            if not space or tr_lower(word) not in self._stopwords or self._kind.match(text, after):
                return start
            start = after
