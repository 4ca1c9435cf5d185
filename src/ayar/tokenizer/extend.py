"""Vocabulary extension: new tokens learned from a corpus, added to a base model without changing the old ones.

``ayar tokenizer extend`` (see :func:`extend`):

1. learn up to N merges of the base's own pieces from the corpus (:mod:`ayar.tokenizer.learn`);
2. add each new token at the end of the vocabulary (existing ids never move) with its
   merge *after* all the base's merges (BPE) or with a score just above the pieces it
   replaces (Unigram);
3. grow the input (and untied output) embeddings and set each new row to the mean of
   the base rows of the pieces it replaces (the "average of subword embeddings"
   initialisation; Hewitt 2021, "Initializing New Word Embeddings for Pretrained
   Language Models", shows it keeps the model's distribution close to the base's);
4. save model, tokenizer and ``ayar_extension.json`` (the new ids, their pieces, the
   corpus hash, fertility before/after) as a folder ``from_pretrained`` loads.

Why the base's tokenisation is kept: a BPE tokenizer applies the lowest-ranked merge
available until none is left. The new merges rank after every base merge, so on any
word the base merges run exactly as before, and only then can a new merge fire; a new
merge only joins two tokens into a token the base does not have, so it can never make a
base merge available again. Hence the extended tokenisation is the base one with some
adjacent pieces joined into new tokens, and a text in which no new token appears is
tokenised exactly as the base tokenises it (tested on every held-out text, see
``unchanged`` in the result).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from ayar.errors import AyarError
from ayar.tokenizer.learn import NewToken, base_units, learn_tokens
from ayar.tokenizer.report import load_texts, measure, open_tokenizer

EXTENSION_FILE = "ayar_extension.json"
HELDOUT_EVERY = 10  # without --heldout, every 10th text of the corpus is held out for the before/after figures


def _vocab(model: dict) -> dict[str, int]:
    if model["type"] == "BPE":
        return dict(model["vocab"])
    return {piece: i for i, (piece, _) in enumerate(model["vocab"])}


def extend_tokenizer_state(state: dict, merges: list[NewToken]) -> tuple[dict, dict[str, int]]:
    """A ``tokenizer.json`` state with the new tokens added (a new dict; ``state`` is not changed).

    Args:
        state: the base ``tokenizer.json`` as a dict (BPE or Unigram model).
        merges: learned merges, in order.

    Returns:
        ``(new_state, {token text: new id})``; new ids follow the largest id in use.

    Raises:
        AyarError: a tokenizer model that is neither BPE nor Unigram.
    """
    state = json.loads(json.dumps(state))
    model = state["model"]
    if model["type"] not in ("BPE", "Unigram"):
        raise AyarError(f"vocabulary extension supports BPE and Unigram tokenizers, not {model['type']}")
    vocab = _vocab(model)
    taken = [*vocab.values(), *(t["id"] for t in state.get("added_tokens") or [])]
    next_id = max(taken) + 1
    if model["type"] == "Unigram" and next_id != len(model["vocab"]):
        raise AyarError("this Unigram tokenizer has added tokens past its vocabulary; extension would move them")
    new_ids: dict[str, int] = {}
    scores = {piece: score for piece, score in model["vocab"]} if model["type"] == "Unigram" else {}
    string_merges = bool(model.get("merges")) and isinstance(model["merges"][0], str)
    for merge in merges:
        if merge.token not in new_ids:
            new_ids[merge.token] = next_id
            next_id += 1
            if model["type"] == "BPE":
                model["vocab"][merge.token] = new_ids[merge.token]
            else:  # a score above the pieces' joint score: Viterbi prefers the new piece where it fits
                scores[merge.token] = scores[merge.left] + scores[merge.right] + 1.0
                model["vocab"].append([merge.token, scores[merge.token]])
        if model["type"] == "BPE":
            model["merges"].append(f"{merge.left} {merge.right}" if string_merges else [merge.left, merge.right])
    return state, new_ids


def init_new_rows(model, pieces: dict[int, tuple[int, ...]]) -> bool:
    """Grow the embeddings to hold the new ids and set each new row to the mean of its pieces' rows.

    Args:
        model: a causal LM (fp32 preferred: the means are taken in the weights' dtype).
        pieces: new id -> the base ids it replaces.

    Returns:
        True when the output embedding is tied to the input one (then only one matrix was set).
    """
    rows = model.get_input_embeddings().weight.shape[0]
    needed = max(pieces) + 1
    if needed > rows:
        model.resize_token_embeddings(needed, mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == inp.data_ptr()
    with torch.no_grad():
        for new_id, base_ids in pieces.items():
            index = torch.tensor(base_ids)
            inp[new_id] = inp[index].mean(0)  # (hidden,)
            if not tied:
                out.weight[new_id] = out.weight[index].mean(0)
                if getattr(out, "bias", None) is not None:
                    out.bias[new_id] = out.bias[index].mean()
    return tied


def learn_extension(base_tok, texts: list[str], add: int, *, min_frequency: int = 2):
    """Learn up to ``add`` tokens from ``texts`` and build the extended ``tokenizer.json`` state (no model involved).

    Returns:
        ``(new_state, {token text: new id}, {new id: base ids it replaces})``; empty when nothing was learned.
    """
    backend = base_tok.backend_tokenizer
    state = json.loads(backend.to_str())
    vocab = _vocab(state["model"])
    known = set(vocab) | {t["content"] for t in state.get("added_tokens") or []}
    merges = learn_tokens(base_units(backend, texts), {i: t for t, i in vocab.items()}, known, add,
                          min_frequency=min_frequency)
    new_state, new_ids = extend_tokenizer_state(state, merges)
    pieces: dict[int, tuple[int, ...]] = {}
    for merge in merges:
        pieces.setdefault(new_ids[merge.token], merge.pieces)
    return new_state, new_ids, pieces


def split_corpus(texts: list[str], heldout: list[str] | None) -> tuple[list[str], list[str]]:
    """(learning texts, held-out texts): ``heldout`` when given, else every 10th text of the corpus."""
    if heldout is not None:
        return texts, heldout
    held = texts[HELDOUT_EVERY - 1::HELDOUT_EVERY]
    learn = [t for i, t in enumerate(texts) if (i + 1) % HELDOUT_EVERY]
    return learn, held


def unchanged_share(base_tok, new_tok, texts: list[str], new_ids: set[int]) -> tuple[int, int]:
    """Of the texts the extended tokenizer encodes without a new token, how many get exactly the base's ids.

    Returns:
        ``(identical, texts without new tokens)``; the two are equal unless extension is broken.
    """
    same = without = 0
    for text in texts:
        ids = new_tok(text, add_special_tokens=False)["input_ids"]
        if new_ids.isdisjoint(ids):
            without += 1
            same += ids == base_tok(text, add_special_tokens=False)["input_ids"]
    return same, without


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise AyarError(f"--out: {out} is not empty; choose another folder or pass --force to replace it")


def extend(base: str, corpus: str | Path, add: int, out: str | Path, *, heldout: str | Path | None = None,
           min_frequency: int = 2, force: bool = False) -> dict:
    """``ayar tokenizer extend``: learn ``add`` tokens from ``corpus``, extend ``base``, save to ``out``.

    Args:
        base: the base model folder (or hub id).
        corpus: text to learn from (.txt or any data file ``prepare`` reads).
        add: the most new tokens to add.
        out: the folder to write; refused when not empty unless ``force``.
        heldout: text for the before/after figures; default: every 10th corpus text, not learned from.
        min_frequency: a pair of pieces seen fewer times is never merged.

    Returns:
        The summary written to ``ayar_extension.json`` (without the token list).

    Raises:
        AyarError: bad arguments, an unsupported tokenizer, or no new token to learn.
    """
    from ayar.export.merge import export_dtype
    from ayar.model.load import load_model

    out = Path(out)
    if add <= 0:
        raise AyarError(f"--add must be positive, got {add}")
    _check_out(out, force)
    learn_texts, held = split_corpus(load_texts(corpus), load_texts(heldout) if heldout else None)
    if not learn_texts or not held:
        raise AyarError(f"--data: {corpus} is too small to learn from and hold out text (pass --heldout FILE)")
    base_tok = open_tokenizer(base)
    new_state, new_ids, pieces = learn_extension(base_tok, learn_texts, add, min_frequency=min_frequency)
    if not new_ids:
        raise AyarError(f"{corpus}: no pair of base pieces occurs {min_frequency}+ times; nothing to add")

    model = load_model(base, dtype=torch.float32)
    save_dtype = export_dtype("auto", model.config)
    tied = init_new_rows(model, pieces)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(save_dtype).save_pretrained(tmp, safe_serialization=True)
    base_tok.save_pretrained(tmp)
    (tmp / "tokenizer.json").write_text(json.dumps(new_state, ensure_ascii=False), encoding="utf-8")
    new_tok = open_tokenizer(str(tmp))
    before, after = measure(base_tok, held, name=base), measure(new_tok, held, name=str(out))
    same, without = unchanged_share(base_tok, new_tok, held, set(new_ids.values()))
    summary = {
        "base_model": base, "added": len(new_ids), "first_new_id": min(new_ids.values()),
        "embedding_rows": model.get_input_embeddings().weight.shape[0], "tied_embeddings": tied,
        "corpus": {"path": str(corpus), "sha256": _sha256(Path(corpus)), "texts": len(learn_texts)},
        "heldout": {"source": str(heldout) if heldout else f"every {HELDOUT_EVERY}th text of the corpus",
                    "texts": len(held), "without_new_tokens": without, "tokenised_as_before": same},
        "before": _figures(before), "after": _figures(after),
        "token_reduction": round(1 - after.tokens / before.tokens, 4),
    }
    tokens = [{"id": new_ids[t], "token": t, "text": new_tok.decode([new_ids[t]]), "pieces": list(pieces[new_ids[t]])}
              for t in new_ids]
    (tmp / EXTENSION_FILE).write_text(json.dumps({**summary, "tokens": tokens}, ensure_ascii=False, indent=1),
                                      encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return summary


def _figures(e) -> dict:
    return {"tokens": e.tokens, "words": e.words, "fertility": e.fertility, "chars_per_token": e.chars_per_token,
            "split_3plus": e.split_3plus}


def read_extension(folder: str | Path) -> dict | None:
    """The ``ayar_extension.json`` of an extended model folder, or None for a model that was not extended."""
    path = Path(folder) / EXTENSION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def new_token_ids(folder: str | Path) -> list[int]:
    """The ids ``ayar tokenizer extend`` added to the model in ``folder``.

    Raises:
        AyarError: the folder holds no extended model.
    """
    info = read_extension(folder)
    if info is None:
        raise AyarError(f"{folder}: not a model extended by `ayar tokenizer extend` (no {EXTENSION_FILE}); "
                        "use adapter.train_embeddings: all, or extend the model first")
    return [t["id"] for t in info["tokens"]]


def render(summary: dict, out: str | Path) -> str:
    """The extension summary as text."""
    b, a, h = summary["before"], summary["after"], summary["heldout"]
    return (f"added {summary['added']} tokens (ids {summary['first_new_id']}.."
            f"{summary['first_new_id'] + summary['added'] - 1}); wrote {out}\n"
            f"held-out text ({h['source']}, {h['texts']} texts): tokens {b['tokens']} -> {a['tokens']} "
            f"({100 * summary['token_reduction']:.1f}% fewer), tokens/word {b['fertility']:.2f} -> "
            f"{a['fertility']:.2f}, words in 3+ pieces {100 * b['split_3plus']:.1f}% -> {100 * a['split_3plus']:.1f}%\n"
            f"held-out texts without a new token: {h['without_new_tokens']}, tokenised exactly as before: "
            f"{h['tokenised_as_before']}")
