"""How efficiently a tokenizer encodes a text: fertility, characters per token, fragmentation, cost.

Measures (Rust et al. 2021, "How Good is Your Tokenizer?", define fertility and the
share of continued words; ours counts 3+ pieces, where Turkish suffix chains hurt):

- ``fertility``: tokens per word, each word's pieces counted in context (the tokens of
  the whole text whose character span overlaps the word; see :mod:`ayar.tokenizer.words`);
- ``chars_per_token``: characters of the text over all its tokens (punctuation, digits
  and spaces included);
- ``split_3plus``: share of word occurrences cut into three or more pieces;
- ``byte_fallback_rate``: share of tokens that are not whole characters: the unknown
  token, SentencePiece byte pieces (``<0xC4>``) or byte-level pieces that decode to a
  partial UTF-8 character;
- ``cost_multiplier``: ``tokens x parameters`` relative to the cheapest tokenizer on the
  same text. Training and serving compute are both about proportional to
  ``tokens x parameters`` (6N and 2N FLOPs per token, Kaplan et al. 2020), so this is
  what the same data costs on each model. Without a model's weights only the token
  count is compared.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ayar.errors import AyarError
from ayar.tokenizer.words import fold, word_spans

BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
TOP_WORDS = 20


@dataclass
class Efficiency:
    """One tokenizer's figures on one text collection (see the module docstring)."""

    tokenizer: str
    texts: int
    chars: int
    words: int
    tokens: int
    word_tokens: int
    fertility: float
    chars_per_token: float
    split_3plus: float
    byte_fallback_rate: float
    parameters: int | None = None
    token_multiplier: float = 1.0
    cost_multiplier: float = 1.0
    fragmented: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def load_texts(path: str | Path) -> list[str]:
    """The texts of a data file: non-empty lines of a .txt file, or every text of every record
    (message contents, prompt, completion, chosen, rejected, text) of a file ``prepare`` reads.

    Raises:
        AyarError: the file is missing or unreadable; DataError for a bad record (file and line named).
    """
    path = Path(path)
    if not path.exists():
        raise AyarError(f"--data: {path} does not exist")
    if path.suffix == ".txt":
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from ayar.data.formats import RecordError, convert, record_texts
    from ayar.data.prepare_config import SourceConfig
    from ayar.data.readers import iter_records, open_source

    source = open_source(SourceConfig(path=str(path.resolve())), Path.cwd())
    texts = []
    for number, raw in iter_records(source.path, source.container):
        if isinstance(raw, RecordError):
            raise AyarError(f"{source.where(number)}: {raw.detail}")
        try:
            record = convert(raw, source.format, source.name, number)
        except RecordError as exc:
            raise AyarError(f"{source.where(number)}: {exc.detail}") from None
        texts += [text for label, text in record_texts(record) if label != "label" and text.strip()]
    return texts


def _partial_ids(tokenizer, ids: set[int]) -> set[int]:
    """Ids among ``ids`` that are not whole characters (unknown, byte piece, partial UTF-8)."""
    partial = set()
    for token_id in ids:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if token_id == tokenizer.unk_token_id or (piece and BYTE_PIECE.match(piece)) \
                or "\ufffd" in tokenizer.decode([token_id]):
            partial.add(token_id)
    return partial


def _word_pieces(spans: list[tuple[int, int]], offsets: list[tuple[int, int]]) -> list[list[int]]:
    """For each word span, the indices of the tokens whose span overlaps it (both lists in text order)."""
    pieces: list[list[int]] = [[] for _ in spans]
    w = 0
    for t, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        while w < len(spans) and spans[w][1] <= s:
            w += 1
        k = w
        while k < len(spans) and spans[k][0] < e:
            pieces[k].append(t)
            k += 1
    return pieces


def piece_text(tokenizer, token_id: int) -> str:
    """A token as the user reads it: its decoded text, or its raw form when that is not whole characters."""
    text = tokenizer.decode([token_id])
    return tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in text else text


def measure(tokenizer, texts: list[str], *, name: str = "", top: int = TOP_WORDS) -> Efficiency:
    """Measure ``tokenizer`` on ``texts`` (no special tokens added).

    Args:
        tokenizer: a Hugging Face fast tokenizer (offsets are needed).
        texts: the text collection.
        name: how the tokenizer is named in the report.
        top: how many fragmented frequent words to list.

    Returns:
        The tokenizer's :class:`Efficiency` (multipliers left at 1; see :func:`compare`).

    Raises:
        AyarError: no word in ``texts``, or a tokenizer without offsets (a slow tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise AyarError(f"{name}: a fast (tokenizers-backed) tokenizer is needed to map tokens to words")
    chars = tokens = words = word_tokens = split3 = 0
    id_counts: Counter[int] = Counter()
    counts: Counter[str] = Counter()
    example: dict[str, tuple[str, list[int]]] = {}
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        spans = list(word_spans(text))
        chars += len(text)
        tokens += len(ids)
        id_counts.update(ids)
        for (a, b), pieces in zip(spans, _word_pieces(spans, offsets), strict=True):
            n = max(1, len(pieces))
            words += 1
            word_tokens += n
            split3 += n >= 3
            key = fold(text[a:b])
            counts[key] += 1
            if key not in example:
                example[key] = (text[a:b], [ids[t] for t in pieces])
    if not words:
        raise AyarError(f"{name}: the data holds no words to measure")
    partial = _partial_ids(tokenizer, set(id_counts))
    return Efficiency(
        tokenizer=name, texts=len(texts), chars=chars, words=words, tokens=tokens, word_tokens=word_tokens,
        fertility=round(word_tokens / words, 3), chars_per_token=round(chars / max(1, tokens), 3),
        split_3plus=round(split3 / words, 4),
        byte_fallback_rate=round(sum(id_counts[i] for i in partial) / max(1, tokens), 4),
        fragmented=_fragmented(tokenizer, counts, example, top))


def _fragmented(tokenizer, counts: Counter[str], example: dict, top: int) -> list[dict]:
    """The ``top`` most fragmented among the frequent words (the 500 most frequent, seen twice or more)."""
    frequent = [w for w, c in counts.most_common(500) if c >= 2] or [w for w, _ in counts.most_common(500)]
    ranked = sorted(frequent, key=lambda w: (-len(example[w][1]), -counts[w], w))[:top]
    return [{"word": example[w][0], "count": counts[w], "pieces": [piece_text(tokenizer, i) for i in example[w][1]]}
            for w in ranked]


def model_parameters(folder: str | Path) -> int | None:
    """Parameters stored in a model folder's safetensors files (tied weights once), or None without weights."""
    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                n = 1
                for dim in shape:
                    n *= dim
                total += n
    return total


def open_tokenizer(path: str):
    """A tokenizer as saved (no chat template needed), safely: no remote code.

    Raises:
        AyarError: nothing loadable at ``path``.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise AyarError(f"--tokenizer: cannot load a tokenizer from {path!r}: {str(exc).strip()[:300]}") from None


def compare(results: list[Efficiency]) -> list[Efficiency]:
    """Fill in each result's token and cost multipliers relative to the cheapest (in place).

    The cost uses ``tokens x parameters`` when every result knows its model's
    parameters, otherwise tokens alone (then ``cost_multiplier == token_multiplier``).
    """
    fewest = min(r.tokens for r in results)
    with_params = all(r.parameters for r in results)
    cheapest = min(r.tokens * (r.parameters if with_params else 1) for r in results)
    for r in results:
        r.token_multiplier = round(r.tokens / fewest, 3)
        r.cost_multiplier = round(r.tokens * (r.parameters if with_params else 1) / cheapest, 3)
    return results


def report(tokenizers: list[str], data: str | Path, *, top: int = TOP_WORDS) -> dict:
    """``ayar tokenizer report``: every tokenizer measured on the same data file, compared.

    Args:
        tokenizers: local tokenizer or model folders (or hub ids).
        data: a .txt file or any data file ``prepare`` reads.

    Returns:
        ``{"data", "texts", "results": [Efficiency as dict, ...]}``.

    Raises:
        AyarError: a tokenizer that cannot be loaded, or unusable data.
    """
    texts = load_texts(data)
    if not texts:
        raise AyarError(f"--data: {data} holds no text")
    results = []
    for path in tokenizers:
        result = measure(open_tokenizer(path), texts, name=path, top=top)
        result.parameters = model_parameters(path)
        results.append(result)
    return {"data": str(data), "texts": len(texts), "results": [r.to_dict() for r in compare(results)]}


def render(rep: dict) -> str:
    """A report from :func:`report` as text: one table line per tokenizer, then its most fragmented words."""
    lines = [f"{rep['data']}: {rep['texts']} texts, {rep['results'][0]['words']} words, "
             f"{rep['results'][0]['chars']} characters",
             f"{'tokenizer':<40} {'tok/word':>8} {'chars/tok':>9} {'3+ pieces':>9} {'bytes/unk':>9} "
             f"{'tokens':>9} {'x tokens':>8} {'x cost':>7}"]
    for r in rep["results"]:
        lines.append(f"{_short(r['tokenizer']):<40} {r['fertility']:>8.2f} {r['chars_per_token']:>9.2f} "
                     f"{100 * r['split_3plus']:>8.1f}% {100 * r['byte_fallback_rate']:>8.2f}% {r['tokens']:>9} "
                     f"{r['token_multiplier']:>8.2f} {r['cost_multiplier']:>7.2f}")
    if not all(r["parameters"] for r in rep["results"]):
        lines.append("x cost = x tokens: not every tokenizer folder holds model weights to weigh tokens by")
    for r in rep["results"]:
        lines.append(f"\nmost fragmented frequent words, {_short(r['tokenizer'])}:")
        lines += [f"  {w['word']} ({w['count']}x): {' | '.join(w['pieces'])}" for w in r["fragmented"]]
    return "\n".join(lines)


def _short(path: str, width: int = 40) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1):]
