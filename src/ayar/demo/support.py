"""Synthetic customer-support replies for the offline demo (style task).

Each pair answers one customer question twice with the same content: ``chosen``
in the formal "siz" register, ``rejected`` in the informal "sen" register, e.g.

    chosen:   "Siparişiniz hazırlanmaktadır ... Anlayışınız için teşekkür ederiz."
    rejected: "Siparişin hazırlanıyor ... Anlayışın için sağ ol."

Preference optimisation on these pairs should lock the tuned model into the
formal register; :func:`formality` measures the share of formal replies.
Templates and slots live in ``data/support.yaml``; generation is deterministic
from the seed. The pairs contain no personal data.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Literal

from ayar.demo.common import MAX_TRIES, balanced_rounds, load_data, tr_capitalize, tr_lower

Register = Literal["formal", "informal", "unknown"]

# --- register markers (matched on tr_lower(text)) ---------------------------------------
# Whole words.
FORMAL_WORDS = frozenset({"siz", "size", "sizi", "sizin", "sizde", "sizden", "sizinle", "sizler", "sizlere", "sizce"})
INFORMAL_WORDS = frozenset(
    {"sen", "sana", "seni", "senin", "sende", "senden", "seninle", "sence", "nasılsın", "hadi", "sağol"}
)
# Whole-word phrases. "sağ ol" does not match "sağ olun", nor "merak etme" "merak etmeyin".
FORMAL_PHRASES = ("rica ederiz", "teşekkür ederiz", "sağ olun", "saygılarımızla")
INFORMAL_PHRASES = ("sağ ol", "merak etme", "kusura bakma", "dert etme", "anlayışın için", "sabrın için")
# 2nd person plural: possessive -(ı)nız ("siparişiniz"), verb -sınız ("alabilirsiniz"),
# polite imperative -iniz ("ediniz"), optionally followed by a case ending
# ("adresinize", "hesabınızdan", "siparişinizin").
_FORMAL_SUFFIX = re.compile(r"n[ıiuü]z(?:[ıiuü]|[yn]?[ae]|[dt][ae]n?|l[ae]|[ıiuü]n|d[ıiuü]r)?$")
_FORMAL_SUFFIX_EXCEPTIONS = frozenset({"deniz", "yalnız", "semiz", "geniz", "boynuz"})
# 2nd person singular verbs, only after a tense or mood marker that makes them
# unambiguous: -yorsun, -abilirsin, -acaksın, -malısın, -mışsın, "misin", and the
# conditional -(ı)rsan/-yorsan. A bare -sın is not counted: "olsun", "versin" are 3rd person.
_INFORMAL_SUFFIX = re.compile(
    r"(?:(?:yor|[ae]bilir|[ae]cak|[ae]cek|malı|meli|m[ıiuü]ş|m[ıiuü])s[ıiuü]n|(?:yor|[ae]r|[ıiuü]r)s[ae]n)$"
)
# 2nd person singular possessive -(ı)n is counted only on a participle ("ettiğin",
# "istediğin"): on other words it cannot be told from the genitive ("ürünün"),
# from stems ("ürün", "yarın", "bugün") or from "için".
_INFORMAL_PARTICIPLE = re.compile(r"[dt][ıiuü]ğ[ıiuü]n$")
_INFORMAL_PARTICIPLE_EXCEPTIONS = frozenset({"düğün"})


def _phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(p) for p in phrases) + r")(?!\w)")


_FORMAL_PHRASE_RE = _phrase_pattern(FORMAL_PHRASES)
_INFORMAL_PHRASE_RE = _phrase_pattern(INFORMAL_PHRASES)


def formality_markers(text: str) -> dict[str, list[str]]:
    """The register markers found in ``text``, for explaining a :func:`formality` verdict.

    Returns:
        ``{"formal": [...], "informal": [...]}``: the matched phrases and words, in
        order, after Turkish lower-casing. A word counts at most once.
    """
    low = tr_lower(text)
    found: dict[str, list[str]] = {
        "formal": _FORMAL_PHRASE_RE.findall(low),
        "informal": _INFORMAL_PHRASE_RE.findall(low),
    }
    for word in re.findall(r"\w+", low):
        if word in FORMAL_WORDS:
            found["formal"].append(word)
        elif word in INFORMAL_WORDS:
            found["informal"].append(word)
        elif _FORMAL_SUFFIX.search(word) and len(word) >= 5 and word not in _FORMAL_SUFFIX_EXCEPTIONS:
            found["formal"].append(word)
        elif _INFORMAL_SUFFIX.search(word) or (
            _INFORMAL_PARTICIPLE.search(word) and word not in _INFORMAL_PARTICIPLE_EXCEPTIONS
        ):
            found["informal"].append(word)
    return found


def formality(text: str) -> Register:
    """Classify the register of a Turkish reply by counting markers.

    Formal ("siz") markers: the pronoun siz and its cases, 2nd person plural
    endings (-nız/-niz/-nuz/-nüz, which covers -ınız and -sınız, optionally with a
    case ending), "rica ederiz", "teşekkür ederiz", "sağ olun", "saygılarımızla".
    Informal ("sen") markers: the pronoun sen and its cases, 2nd person singular
    verbs after a tense marker (-yorsun, -abilirsin, -acaksın, -malısın, -mışsın,
    "misin", conditional -rsan), the possessive -(ı)n on a participle
    ("ettiğin"), "sağ ol", "hadi", "merak etme", "kusura bakma", "dert etme".
    A bare -sın or -ın is deliberately not counted (3rd person imperatives,
    genitives and stems such as "ürün" would be misread).

    Returns:
        "formal" if formal markers outnumber informal ones, "informal" if the
        reverse, "unknown" when there are none or as many of each.
    """
    found = formality_markers(text)
    n_formal, n_informal = len(found["formal"]), len(found["informal"])
    if n_formal > n_informal:
        return "formal"
    if n_informal > n_formal:
        return "informal"
    return "unknown"


# --- generation ---------------------------------------------------------------------------


def _slots(rng: random.Random, topic: dict) -> dict[str, str]:
    """Values for every template slot of ``topic``; a template uses the ones it names."""
    vocab = load_data("support")
    cats = load_data("products")["categories"]
    nouns = [noun for name in topic.get("product_categories", cats) for noun in cats[name]["nouns"]]
    return {
        "order": f"SP{rng.randint(1_000_000, 9_999_999)}",
        "product": rng.choice(nouns),
        "code": f"{rng.choice(vocab['coupon_words'])}{rng.randrange(10, 55, 5)}",
        "amount": f"{rng.randint(49, 4999)},{rng.choice(['00', '50', '90', '99'])}",
        "date": f"{rng.randint(1, 28)} {rng.choice(vocab['months'])}",
        "days": str(rng.randint(2, 14)),
        "hours": str(rng.choice([1, 2, 6, 12, 24, 48])),
    }


def _pair(rng: random.Random, topic_name: str) -> dict[str, str]:
    vocab = load_data("support")
    topic = vocab["topics"][topic_name]
    slots = _slots(rng, topic)
    question = tr_capitalize(rng.choice(topic["prompts"]).format(**slots))
    opener = rng.choice(vocab["prompt_openers"])
    prompt = (f"{opener} {question}" if opener else question) + rng.choice(vocab["prompt_closers"])
    parts = []  # {"formal": ..., "informal": ...} sentences in reply order
    if rng.random() < 0.4:
        parts.append(rng.choice(vocab["greetings"]))
    parts.append(rng.choice(topic["replies"]))
    if rng.random() < 0.7:
        parts.append(rng.choice(vocab["closings"]))
    chosen = " ".join(tr_capitalize(p["formal"].format(**slots)) for p in parts)
    rejected = " ".join(tr_capitalize(p["informal"].format(**slots)) for p in parts)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def topics() -> list[str]:
    """The support topics, in the order of the data file."""
    return list(load_data("support")["topics"])


def support_stream(seed: int) -> Iterator[dict[str, str]]:
    """An endless, deterministic stream of pairs, topics in shuffled rounds; prompts may repeat."""
    rng = random.Random(seed)
    for topic in balanced_rounds(rng, topics()):
        yield _pair(rng, topic)


def support_pairs(n: int, seed: int) -> list[dict[str, str]]:
    """Generate ``n`` preference pairs with distinct prompts.

    Args:
        n: number of pairs (>= 0).
        seed: seed of the private random generator.

    Returns:
        ``{"prompt": question, "chosen": formal reply, "rejected": informal reply}``
        dicts; chosen and rejected carry the same content and always differ.

    Raises:
        ValueError: ``n`` is negative, or the templates cannot give ``n`` distinct prompts.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    pairs: list[dict[str, str]] = []
    for topic in balanced_rounds(rng, topics()):
        if len(pairs) == n:
            break
        for _ in range(MAX_TRIES):
            pair = _pair(rng, topic)
            if pair["prompt"] not in seen:
                break
        else:
            raise ValueError(f"could not draw {n} distinct support prompts; the templates are too few")
        seen.add(pair["prompt"])
        pairs.append(pair)
    return pairs


def support_splits(n_train: int = 1200, n_test: int = 200, seed: int = 0) -> dict[str, list[dict[str, str]]]:
    """Train/test preference pairs; no prompt appears twice, within or across splits."""
    pairs = support_pairs(n_train + n_test, seed)
    return {"train": pairs[:n_train], "test": pairs[n_train:]}
