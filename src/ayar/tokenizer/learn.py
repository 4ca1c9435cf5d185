"""Learning new tokens on top of a base tokenizer: BPE merges continued from its own segmentation.

Every word of the corpus is first cut exactly as the base tokenizer cuts it (its
normaliser, pre-tokeniser and model). Each base token is then written as one private-use
character, so that ``tokenizers``' own BPE trainer, run on those character strings,
learns merges *of base tokens*: the most frequent adjacent pair of pieces, then the next,
as BPE training always does (Sennrich et al. 2016), but continuing where the base
vocabulary stopped. Frequent whole words ("teşekkür") and suffix chains ("lerimizden")
that the base cuts into many pieces are what such merges build first.

A learned token is kept only when its text is not already in the base vocabulary (and
only when the tokens it is built from are kept), so the result is a list of genuinely new
tokens, each with the base pieces it replaces.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ayar.errors import AyarError
from ayar.tokenizer.report import BYTE_PIECE

# Private-use code points (planes 15 and 16): one per distinct base token of the corpus.
_PRIVATE = [*range(0xF0000, 0xFFFFE), *range(0x100000, 0x10FFFE)]
WORD_START = "▁"  # SentencePiece's word-start marker; units are cut before it


@dataclass(frozen=True)
class NewToken:
    """A learned token: its text in the vocabulary's own form, the merge that builds it, the base ids it replaces."""

    token: str
    left: str
    right: str
    pieces: tuple[int, ...]


def base_units(backend, texts: Iterable[str]) -> Counter[tuple[int, ...]]:
    """How often each word-sized run of base token ids occurs in ``texts``.

    A unit is one pre-token of the base tokenizer, cut again before every token that
    starts with ``▁`` (SentencePiece models without a pre-tokeniser see a whole line as
    one pre-token) and around byte-fallback pieces (merges never apply to those).

    Args:
        backend: the base ``tokenizers.Tokenizer``.
        texts: the corpus.
    """
    pretokens: Counter[str] = Counter()
    for text in texts:
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer else text
        pieces = backend.pre_tokenizer.pre_tokenize_str(normalized) if backend.pre_tokenizer else [(normalized, None)]
        pretokens.update(piece for piece, _ in pieces)
    units: Counter[tuple[int, ...]] = Counter()
    for pretoken, count in pretokens.items():
        for unit in _cut(backend.model.tokenize(pretoken)):
            units[unit] += count
    return units


def _cut(tokens) -> Iterator[tuple[int, ...]]:
    unit: list[int] = []
    for tok in tokens:
        if BYTE_PIECE.match(tok.value) or tok.value.startswith(WORD_START):
            if len(unit) > 1:
                yield tuple(unit)
            unit = [] if BYTE_PIECE.match(tok.value) else [tok.id]
        else:
            unit.append(tok.id)
    if len(unit) > 1:
        yield tuple(unit)


def learn_tokens(units: Counter[tuple[int, ...]], id_to_token: dict[int, str], known: set[str], n: int,
                 *, min_frequency: int = 2) -> list[NewToken]:
    """Learn up to ``n`` new tokens from base-token units with ``tokenizers``' BPE trainer.

    Args:
        units: unit -> count, from :func:`base_units`.
        id_to_token: the base vocabulary, id -> token text.
        known: every token text the base already has (vocabulary and added tokens).
        n: how many new tokens to return at most.
        min_frequency: a pair seen fewer times is never merged.

    Returns:
        The learned merges in the order they must be applied, each with the token it builds; a token
        text can appear twice when the trainer found two ways to build it (the first one's pieces count).

    Raises:
        AyarError: the corpus uses more distinct base tokens than there are private characters.
    """
    from tokenizers import Tokenizer, models, trainers

    used = sorted({i for unit in units for i in unit})
    if len(used) > len(_PRIVATE):
        raise AyarError(f"the corpus uses {len(used)} distinct base tokens; at most {len(_PRIVATE)} are supported")
    char_of = {i: chr(_PRIVATE[k]) for k, i in enumerate(used)}
    id_of = {c: i for i, c in char_of.items()}
    words = {"".join(char_of[i] for i in unit): count for unit, count in units.items()}
    trainer = trainers.BpeTrainer(vocab_size=len(used) + int(n * 1.5) + 64, min_frequency=min_frequency,
                                  initial_alphabet=list(char_of.values()),
                                  special_tokens=[], show_progress=False)
    learner = Tokenizer(models.BPE())

    def occurrences() -> Iterator[str]:
        for word, count in words.items():
            for _ in range(count):
                yield word

    learner.train_from_iterator(occurrences(), trainer=trainer, length=sum(words.values()))
    kept: list[NewToken] = []
    texts: dict[str, str] = {c: id_to_token[i] for c, i in id_of.items()}  # private string -> token text
    new_texts: set[str] = set()
    for left, right in _merges(learner):
        if len(new_texts) >= n:
            break
        if left not in texts or right not in texts:
            continue  # built from a token that was not kept
        text = texts[left] + texts[right]
        if text in known:
            continue  # the base has it already: merging to it would change the base's own segmentation
        texts[left + right] = text
        # A second way to build a kept token (other pieces, same text) is a merge but not a new token.
        new_texts.add(text)
        kept.append(NewToken(text, texts[left], texts[right], tuple(id_of[c] for c in left + right)))
    return kept


def _merges(tokenizer) -> list[tuple[str, str]]:
    import json

    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in merges]
