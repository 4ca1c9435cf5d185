"""Memorisation audit: does the tuned model remember its training data?

Three measurements, written to ``RUN_DIR/eval/memorisation.json``:

- **canary exposure** (Carlini et al. 2019): how much more likely the model finds the
  fake secrets ``prepare`` planted than other values of the same shape
  (:mod:`ayar.eval.canary`; ``prepare`` plants them, :mod:`ayar.data.canary`);
- **membership inference**: can a record's score tell training records from held-out
  ones? Two scores: the mean token log-likelihood (the loss attack, Yeom et al. 2018)
  and Min-K% Prob (Shi et al. 2023, "Detecting Pretraining Data from Large Language
  Models": the mean log-probability of the k% least likely tokens). Each is summarised by
  the ROC AUC (0.5: no signal; 1: every training record scores above every held-out one);
- **verbatim regurgitation** (as in Carlini et al. 2023, "Quantifying Memorization Across
  Neural Language Models"): given the first P tokens of a training record, how often does
  greedy decoding reproduce the next N tokens exactly?

Everything rests on one forward pass per text (:func:`score_sequences`): the
log-probability of each token given the ones before it, and whether it was the
model's top choice.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayar.errors import AyarError
from ayar.eval.config import MemorisationSection
from ayar.model.run_folder import RunFolder

if TYPE_CHECKING:
    import torch

Item = str | Sequence[Mapping[str, str]]  # raw text, or a conversation rendered with the chat template


# ----------------------------------------------------------------------------- scoring


@dataclass
class TokenScores:
    """Per-token results for one text of n tokens (both tensors have n - 1 entries)."""

    logprobs: torch.Tensor  # (n - 1,) log p(x_t | x_<t) for t = 1 .. n-1
    greedy: torch.Tensor  # (n - 1,) bool: x_t was the model's most likely next token


def encode(tokenizer, item: Item, max_length: int) -> list[int]:
    """Token ids of a text (with the tokenizer's own special tokens, e.g. BOS) or of a
    conversation rendered with its chat template (which carries them already)."""
    if isinstance(item, str):
        ids = tokenizer(item, add_special_tokens=True)["input_ids"]
    else:
        from ayar.chat.tokenize import render

        ids = tokenizer(render(tokenizer, item), add_special_tokens=False)["input_ids"]
    return list(ids[:max_length])


def score_sequences(model, sequences: Sequence[Sequence[int]], *, pad_id: int = 0,
                    batch_size: int = 8) -> list[TokenScores]:
    """One teacher-forced forward pass per sequence; see :class:`TokenScores`.

    Sequences are batched by length (right-padded, padding masked) to waste little compute.
    The model should be in eval mode.
    """
    import torch

    device = next(model.parameters()).device
    out: list[TokenScores | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[i]) for i in chunk)
            ids = torch.full((len(chunk), max(width, 1)), pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[row, : len(sequences[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            logprobs, greedy = next_token_scores(model, ids, mask)  # (batch, width-1) each
            for row, i in enumerate(chunk):
                n = max(len(sequences[i]) - 1, 0)
                out[i] = TokenScores(logprobs[row, :n].cpu(), greedy[row, :n].cpu())
    return out  # type: ignore[return-value]


def next_token_scores(model, ids, mask, positions_per_chunk: int = 256):
    """Log-probability of each next token and whether it is the greedy choice, for every position.

    The vocabulary projection runs over chunks of positions, so memory holds (chunk, vocab) logits at a
    time, never (batch, width, vocab): with a 262k-token vocabulary (Gemma 3) a batch of 8 x 512 would
    otherwise need 4 GiB of fp32 logits, twice over for the log-softmax.

    Returns:
        ``(logprobs, greedy)``, each (batch, width-1): position t scores token t+1.
    """
    import torch

    from ayar.train.losses import scale_logits, unwrap

    inner = unwrap(model)
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, :-1]
    targets = ids[:, 1:]  # (batch, width-1)
    flat_hidden, flat_targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    logprobs = torch.empty(flat_targets.shape, dtype=torch.float32, device=ids.device)
    greedy = torch.empty(flat_targets.shape, dtype=torch.bool, device=ids.device)
    head = inner.get_output_embeddings()
    for start in range(0, flat_targets.numel(), positions_per_chunk):
        part = slice(start, start + positions_per_chunk)
        logits = scale_logits(inner.config, head(flat_hidden[part]).float())  # (chunk, vocab)
        logprobs[part] = logits.log_softmax(-1).gather(-1, flat_targets[part, None]).squeeze(-1)
        greedy[part] = logits.argmax(-1) == flat_targets[part]
    return logprobs.view(targets.shape), greedy.view(targets.shape)


def sentence_losses(model, tokenizer, texts: Sequence[str], *, batch_size: int = 8, max_length: int = 512
                    ) -> list[float]:
    """Log-perplexity of each text: its summed negative log-likelihood in nats (the canary score)."""
    sequences = [encode(tokenizer, t, max_length) for t in texts]
    scores = score_sequences(model, sequences, pad_id=_pad_id(tokenizer), batch_size=batch_size)
    return [-float(s.logprobs.sum()) for s in scores]


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


# ----------------------------------------------------------------------------- membership inference


def min_k_percent(logprobs: Sequence[float], k: float) -> float:
    """Min-K% Prob (Shi et al. 2023): the mean of the k% lowest token log-probabilities.

    The k% is ``max(1, floor(n * k / 100))`` tokens of the n scored. Higher means the text
    looks more familiar to the model: unseen text tends to hold a few very unlikely tokens.
    """
    if not logprobs:
        raise ValueError("no tokens")
    count = max(1, int(len(logprobs) * k / 100))
    lowest = sorted(logprobs)[:count]
    return sum(lowest) / count


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """ROC AUC of a score that should be higher for ``positives``, by the Mann-Whitney U statistic.

    AUC = U / (n_pos * n_neg), U = (sum of the positives' ranks in the pooled sample)
    - n_pos (n_pos + 1) / 2, with tied values given their average rank. This equals the
    share of (positive, negative) pairs the score orders correctly, ties counting one half.
    """
    if not positives or not negatives:
        raise ValueError("both groups need at least one score")
    pooled = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        average_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += average_rank * sum(label for _, label in pooled[i:j])
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def membership(train: Sequence[TokenScores], heldout: Sequence[TokenScores], k: float) -> dict[str, Any]:
    """Loss and Min-K% attacks on scored records; the ``membership`` block of memorisation.json."""
    train = [s for s in train if len(s.logprobs)]
    heldout = [s for s in heldout if len(s.logprobs)]
    loss = {name: [float(s.logprobs.mean()) for s in group] for name, group in (("train", train), ("held", heldout))}
    min_k = {name: [min_k_percent(s.logprobs.tolist(), k) for s in group]
             for name, group in (("train", train), ("held", heldout))}
    both = bool(train and heldout)
    return {
        "loss_auc": round(roc_auc(loss["train"], loss["held"]), 4) if both else None,
        "min_k_auc": round(roc_auc(min_k["train"], min_k["held"]), 4) if both else None,
        "k": k,
        "n_train": len(train),
        "n_heldout": len(heldout),
        "mean_loss_train": round(-sum(loss["train"]) / len(train), 4) if train else None,
        "mean_loss_heldout": round(-sum(loss["held"]) / len(heldout), 4) if heldout else None,
    }


# ----------------------------------------------------------------------------- regurgitation


def regurgitation(scores: Sequence[TokenScores], prefix_tokens: int, continuation_tokens: int) -> dict[str, Any]:
    """Share of records whose next ``continuation_tokens`` greedy decoding reproduces exactly.

    Greedy decoding from the first P tokens reproduces tokens P .. P+N-1 exactly if and only if
    each of them is the model's top choice given the true tokens before it (by induction: while
    every step matches, the greedy prefix *is* the true prefix). So the teacher-forced pass of
    :func:`score_sequences` decides it, with no generation loop. Records shorter than P + N
    tokens are skipped.
    """
    needed = prefix_tokens + continuation_tokens
    usable = [s for s in scores if len(s.greedy) + 1 >= needed]
    hits = sum(bool(s.greedy[prefix_tokens - 1 : needed - 1].all()) for s in usable)
    return {"prefix_tokens": prefix_tokens, "continuation_tokens": continuation_tokens,
            "rate": round(hits / len(usable), 4) if usable else None, "n": len(usable),
            "skipped_short": len(scores) - len(usable)}


# ----------------------------------------------------------------------------- the audit


def memorisation_audit(model, tokenizer, train_texts: Sequence[Item], heldout_texts: Sequence[Item], *,
                       canaries: dict[str, Any] | None = None, candidates: int = 1000, controls: int = 5,
                       k: float = 20.0, prefix_tokens: int = 32, continuation_tokens: int = 32,
                       max_records: int = 200, max_length: int = 512, batch_size: int = 8,
                       seed: int = 0) -> dict[str, Any]:
    """Run the three measurements of the module docstring on one model.

    Args:
        model, tokenizer: the model under audit (eval mode) and its tokenizer.
        train_texts: records it trained on: texts, or conversations (message lists).
        heldout_texts: records of the same kind it never saw (may be empty: no membership AUC).
        canaries: the prepare manifest's ``canaries`` entry (template and values); None: no exposure.
        candidates, controls: see :func:`ayar.eval.canary.canary_exposures`.
        k: Min-K% Prob's k, in percent.
        prefix_tokens, continuation_tokens: the regurgitation test's P and N.
        max_records: at most this many training and held-out records are scored (a seeded sample).
        max_length, batch_size: scoring limits.
        seed: seeds the samples.

    Returns:
        ``{"canaries": {...} | None, "membership": {...}, "regurgitation": {...}}``.

    Raises:
        AyarError: no training records.
    """
    from ayar.eval.canary import canary_exposures

    if not train_texts:
        raise AyarError("memorisation audit: no training records to score")
    rng = random.Random(f"memorisation:{seed}")
    train = _sample(train_texts, max_records, rng)
    heldout = _sample(heldout_texts, max_records, rng)
    pad = _pad_id(tokenizer)
    scored = score_sequences(model, [encode(tokenizer, x, max_length) for x in [*train, *heldout]], pad_id=pad,
                             batch_size=batch_size)
    train_scores, heldout_scores = scored[: len(train)], scored[len(train) :]

    def score(sentences: list[str]) -> list[float]:
        return sentence_losses(model, tokenizer, sentences, batch_size=batch_size, max_length=max_length)

    return {
        "canaries": canary_exposures(score, canaries, candidates=candidates, controls=controls, seed=seed)
        if canaries else None,
        "membership": membership(train_scores, heldout_scores, k),
        "regurgitation": regurgitation(train_scores, prefix_tokens, continuation_tokens),
    }


def _sample(items: Sequence[Item], n: int, rng: random.Random) -> list[Item]:
    items = list(items)
    return items if len(items) <= n else [items[i] for i in sorted(rng.sample(range(len(items)), n))]


# ----------------------------------------------------------------------------- on a run folder


def read_items(path: str | Path) -> list[Item]:
    """The texts the model learns from in a data file, one item per record.

    JSONL: ``messages`` -> the conversation; ``prompt`` + ``chosen`` (preference) or
    ``prompt`` + ``completion`` (KTO) -> prompt and reply as a conversation; ``text`` -> the text.
    ``.txt``: documents separated by blank lines.

    Raises:
        DataError: missing file or a record with none of these fields.
    """
    from ayar.data.read import iter_jsonl, read_texts
    from ayar.errors import DataError

    path = Path(path)
    if path.suffix == ".txt":
        return [t.text for t in read_texts(path)]
    items: list[Item] = []
    for number, obj in iter_jsonl(path):
        if isinstance(obj.get("messages"), list):
            items.append(obj["messages"])
        elif isinstance(obj.get("prompt"), list) and isinstance(obj.get("chosen") or obj.get("completion"), list):
            items.append(obj["prompt"] + (obj.get("chosen") or obj["completion"]))
        elif isinstance(obj.get("text"), str):
            items.append(obj["text"])
        else:
            raise DataError(str(path), number, "no `messages`, `prompt` + `chosen`/`completion` or `text` field")
    return items


def planted_canaries(manifest: str | Path | None, train_path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The canaries recorded by ``prepare``: from ``manifest`` or, when None, manifest.json next to the
    training file. Returns (entry or None, the manifest's path or None).

    Raises:
        AyarError: an explicitly named manifest that is missing or records no canaries.
    """
    path = Path(manifest) if manifest else Path(train_path).with_name("manifest.json")
    if not path.is_file():
        if manifest:
            raise AyarError(f"eval.memorisation.canaries: {path} not found")
        return None, None
    entry = json.loads(path.read_text(encoding="utf-8")).get("canaries")
    if manifest and not entry:
        raise AyarError(f"eval.memorisation.canaries: {path} records no canaries (prepare.canaries was off)")
    return entry, str(path) if entry else None


def run_memorisation(run: str | Path | RunFolder, config: MemorisationSection | None = None, *, model=None,
                     tokenizer=None) -> dict[str, Any]:
    """Audit a finished run and write ``RUN_DIR/eval/memorisation.json``.

    Training records come from the run's ``data.train``; held-out ones and canaries as
    :class:`MemorisationSection` says.

    Args:
        run: the run folder (or its path).
        model, tokenizer: the already loaded tuned model; None loads it.

    Returns:
        What was written (see :func:`memorisation_audit`), plus ``inputs`` (the files used).
    """
    from ayar.govern.manifest import write_json_atomic
    from ayar.model.run_folder import load_for_inference

    run = run if isinstance(run, RunFolder) else RunFolder.open(run)
    config = config or MemorisationSection()
    recipe = run.recipe
    train_path = Path(recipe.data.train)
    heldout_path = config.heldout or recipe.data.val
    if heldout_path is None and train_path.with_name("test.jsonl").is_file():
        heldout_path = str(train_path.with_name("test.jsonl"))
    canaries, manifest = planted_canaries(config.canaries, train_path)
    if model is None:
        model, tokenizer = load_for_inference(run)
    result = memorisation_audit(
        model, tokenizer, read_items(train_path), read_items(heldout_path) if heldout_path else [],
        canaries=canaries, candidates=config.candidates, controls=config.controls, k=config.min_k,
        prefix_tokens=config.prefix_tokens, continuation_tokens=config.continuation_tokens,
        max_records=config.max_records, max_length=config.max_length, batch_size=config.batch_size,
        seed=config.seed)
    result["inputs"] = {"train": str(train_path), "heldout": heldout_path, "canaries_manifest": manifest}
    write_json_atomic(run.eval_dir / "memorisation.json", result)
    return result


def exposure_summary(result: dict[str, Any]) -> str:
    """One console line about the audit's result."""
    parts = []
    if result.get("canaries"):
        c = result["canaries"]
        parts.append(f"canary exposure mean {c['mean']:.1f} / max {c['max']:.1f} bits "
                     f"(chance {c['chance_level']:.0f}, ceiling {c['candidate_space_log2']:.1f})")
    m = result["membership"]
    if m["loss_auc"] is not None:
        parts.append(f"membership AUC loss {m['loss_auc']:.2f}, Min-{m['k']:g}% {m['min_k_auc']:.2f}")
    r = result["regurgitation"]
    if r["rate"] is not None:
        parts.append(f"regurgitation {r['rate']:.1%} of {r['n']} records")
    return "; ".join(parts) if parts else "nothing measured"

