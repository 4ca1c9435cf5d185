"""How efficiently the recipe's tokenizer encodes the training text, and what extending it would save.

The figures are :func:`ayar.tokenizer.report.measure` (tokens per word, characters per
token, words in 3+ pieces, byte/unknown tokens, most fragmented words) on the texts of
the records the plan tokenises: the whole file, or the same random sample
(:func:`ayar.plan.data.sample_texts`).

Whether the tokenizer fragments the text depends on the language: Turkish words are
long (suffix chains), so even a tokenizer built for Turkish needs about two tokens a
word. :func:`fragmenting` sets its thresholds from measured references:

- Turkish: Gemma 3 270M, whose vocabulary covers Turkish, needs 2.00 tokens per word
  and cuts 29% of words into 3+ pieces on the bench's held-out Turkish prose
  (``bench/results/tokenizer_extension.json``); SmolLM2-135M, English-centric, 3.88
  and 76%. Above :data:`TURKISH_LEVEL` a tokenizer fragments any text.
- English: both need 1.1 tokens per word and cut 3% of words into 3+ pieces on the
  English prose paragraphs of this project's README. Above :data:`ENGLISH_LEVEL` (and
  below the Turkish level) a tokenizer fragments the text unless the text is Turkish.

Only for a fragmenting tokenizer is the saving measured (it costs about a second on
an English-centric vocabulary, more on a large one): :func:`extension_saving` learns up
to :data:`EXTEND_ADD` tokens with :func:`ayar.tokenizer.extend.learn_extension` (no
model needed) from nine in ten of the texts and counts the tokens of the tenth before
and after, as ``ayar tokenizer extend`` reports by default. Learned from a sample of the
training data and counted on more of it, the saving is an estimate of what extending on
the whole training file saves on text like it, stated as such with how it was measured;
the bench's figures (:data:`BENCH`) are quoted beside it, and instead of it when the
sample holds too little text to measure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ayar.errors import AyarError
from ayar.tokenizer.report import Efficiency, measure
from ayar.tokenizer.words import TURKISH_SHARE, turkish_share, word_spans

TURKISH_LEVEL = (2.4, 0.40)  # tokens per word, share of words in 3+ pieces: a fragmenting tokenizer beyond
ENGLISH_LEVEL = (1.6, 0.15)  # ... for text that is not Turkish
EXTEND_ADD = 5000  # tokens learned for the estimate (the and the bench's N)
MIN_HELDOUT_WORDS = 200  # fewer held-out words: no measured saving, the bench figure is quoted instead
TOP = 5  # most fragmented words shown
BENCH = ("bench/results/tokenizer_extension.json: 42% fewer tokens for SmolLM2-135M (3.88 tokens per word), "
         "10% for Gemma 3 270M (2.00), up to 5,000 tokens added, on held-out Turkish prose")


@dataclass
class Extension:
    """Tokens of the held-out texts before and after an extension learned from the other texts."""

    added: int
    learned_texts: int
    heldout_texts: int
    tokens_before: int
    tokens_after: int

    @property
    def reduction(self) -> float:
        return 1 - self.tokens_after / self.tokens_before if self.tokens_before else 0.0

    def to_dict(self) -> dict:
        return {"added": self.added, "learned_texts": self.learned_texts, "heldout_texts": self.heldout_texts,
                "tokens_before": self.tokens_before, "tokens_after": self.tokens_after,
                "token_reduction": round(self.reduction, 4)}


@dataclass
class TokenizerFit:
    """The tokenizer's figures on the training text; ``extension`` only for a fragmenting tokenizer."""

    efficiency: Efficiency | None  # None: not measurable, see note
    fragmenting: bool = False
    extension: Extension | None = None  # None: not fragmenting, or too little text to measure (see note)
    note: str = ""

    def to_dict(self) -> dict:
        e = self.efficiency.to_dict() if self.efficiency else None
        if e:  # one tokenizer: nothing to compare it with
            for key in ("parameters", "token_multiplier", "cost_multiplier"):
                e.pop(key)
        return {"figures": e, "fragmenting": self.fragmenting,
                "extension": self.extension.to_dict() if self.extension else None, "note": self.note}


def is_turkish(texts: list[str]) -> bool:
    """The texts read as Turkish by the project's language check (:func:`ayar.tokenizer.words.turkish_share`)."""
    return turkish_share(" ".join(texts)) >= TURKISH_SHARE


def fragmenting(e: Efficiency, texts: list[str]) -> bool:
    """Does the tokenizer cut this text into more pieces than one made for its language would (module docstring)?"""
    if e.fertility >= TURKISH_LEVEL[0] or e.split_3plus >= TURKISH_LEVEL[1]:
        return True
    if e.fertility < ENGLISH_LEVEL[0] and e.split_3plus < ENGLISH_LEVEL[1]:
        return False
    return not is_turkish(texts)  # usual for Turkish, high for English


def extension_saving(tokenizer, texts: list[str], add: int = EXTEND_ADD) -> tuple[Extension | None, str]:
    """Learn up to ``add`` tokens from nine in ten texts, count the tenth's tokens before and after.

    Returns:
        ``(extension, note)``: extension None when there is too little held-out text or the
        tokenizer cannot be extended, with the reason in ``note``.
    """
    from tokenizers import Tokenizer

    from ayar.tokenizer.extend import learn_extension, split_corpus

    learn, held = split_corpus(texts, None)
    words = sum(1 for text in held for _ in word_spans(text))
    if words < MIN_HELDOUT_WORDS:
        return None, f"too little text to measure what extension saves ({words} held-out words, " \
                     f"{MIN_HELDOUT_WORDS} needed)"
    try:
        state, new_ids, _ = learn_extension(tokenizer, learn, add)
    except AyarError as exc:
        return None, f"cannot estimate extension: {exc}"
    base = tokenizer.backend_tokenizer
    extended = Tokenizer.from_str(json.dumps(state)) if new_ids else base

    def count(tok) -> int:
        return sum(len(enc.ids) for enc in tok.encode_batch(held, add_special_tokens=False))

    return Extension(len(new_ids), len(learn), len(held), count(base), count(extended)), ""


def tokenizer_fit(tokenizer, texts: list[str], *, name: str = "") -> TokenizerFit:
    """The tokenizer's figures on ``texts`` and, when it fragments them, the measured saving of extension.

    Never raises for text or a tokenizer it cannot measure: the plan is advice, so the reason
    goes into ``note`` instead.
    """
    try:
        e = measure(tokenizer, texts, name=name, top=TOP)
    except AyarError as exc:
        return TokenizerFit(None, note=str(exc))
    if not fragmenting(e, texts):
        return TokenizerFit(e)
    extension, note = extension_saving(tokenizer, texts)
    return TokenizerFit(e, True, extension, note)
