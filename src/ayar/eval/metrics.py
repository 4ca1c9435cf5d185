"""Metrics: predictions and references in, per-example statistics and a corpus value out.

Every metric is a function ``fn(batch: MetricInput) -> list[Score]`` listed by
name in :data:`METRICS` (a plain dict: the recipe's ``eval.metrics`` names
entries of it, and new metrics are added with :func:`register_metric`). One
metric may produce several rows (``json`` gives a parse rate and one accuracy
per field).

A :class:`Score` keeps, for each example, the *sufficient statistics* of the
corpus value, and a function that turns any subset of those rows into the
value. The corpus value is ``aggregate(stats)``; the paired bootstrap
(:mod:`ayar.eval.bootstrap`) resamples rows and calls the same function, so the
interval is always about the number that is reported (corpus BLEU, not a mean
of sentence BLEUs; perplexity over all tokens, not a mean of perplexities).
"""

from __future__ import annotations

import importlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ayar.data.pii.gazetteer import tr_lower
from ayar.errors import AyarError
from ayar.eval.structured import parse_json_lenient, parse_json_object

if TYPE_CHECKING:
    from ayar.eval.config import EvalSection

OTHER_LABEL = "(other)"  # the predicted label of a reply whose label is missing or not among the references'


@dataclass(frozen=True)
class MetricInput:
    """Everything a metric may look at, for one system.

    ``nll`` holds, per example, the summed negative log-likelihood (nats) of the
    reference's tokens under the model and their count; None when the system is
    an API endpoint, which does not expose it.
    """

    predictions: Sequence[str]
    references: Sequence[str]
    examples: Sequence[dict]
    section: EvalSection
    nll: Sequence[tuple[float, int]] | None = None


@dataclass(frozen=True)
class Score:
    """One reported number, with what the bootstrap needs to resample it.

    ``stats`` is (n_examples, k): per-example sufficient statistics; None when
    the metric cannot be computed for this system. ``aggregate`` maps any subset
    of rows to the value. ``per_example`` is what ``examples.jsonl`` shows.
    """

    name: str
    description: str
    higher_is_better: bool
    stats: np.ndarray | None
    aggregate: Callable[[np.ndarray], float]
    per_example: list[float | None]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The corpus value; None when unavailable or undefined (e.g. no example has the field)."""
        if self.stats is None or len(self.stats) == 0:
            return None
        value = float(self.aggregate(self.stats))
        return value if math.isfinite(value) else None


MetricFn = Callable[[MetricInput], list[Score]]


# ----------------------------------------------------------------------------- shared pieces


def _mean(rows: np.ndarray) -> float:
    return float(rows[:, 0].mean())


def _ratio(rows: np.ndarray) -> float:
    """Sum of column 0 over sum of column 1 (NaN when nothing was counted)."""
    total = rows[:, 1].sum()
    return float(rows[:, 0].sum() / total) if total else math.nan


def mean_score(name: str, description: str, values: Sequence[float], higher_is_better: bool = True) -> Score:
    """A metric that is the plain mean of one number per example."""
    stats = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    return Score(name, description, higher_is_better, stats, _mean, [float(v) for v in values])


def normalise_text(text: str) -> str:
    """The form exact match and ROUGE-L compare: Unicode NFKC, Turkish-aware case folding, single spaces.

    ``I`` folds to ``ı`` and ``İ`` to ``i`` (Turkish rules, :func:`~ayar.data.pii.gazetteer.tr_lower`),
    and ``i`` + combining dot above (what non-Turkish lower-casing makes of ``İ``) to ``i``;
    then :meth:`str.casefold` (``ß`` -> ``ss``) and whitespace runs collapse to one space.
    """
    text = unicodedata.normalize("NFKC", text).replace("i\u0307", "i")
    return " ".join(tr_lower(text).casefold().split())


def words(text: str) -> list[str]:
    """Word tokens for ROUGE-L: runs of Unicode letters, digits and ``_`` of :func:`normalise_text`.

    ``\\w`` on ``str`` patterns is Unicode-aware, so ``güzel`` and ``İstanbul``
    (-> ``istanbul``) stay whole words, where an ASCII ``[a-z0-9]+`` tokenizer
    splits them or drops them entirely (``üç`` has no ASCII letter).
    """
    return re.findall(r"\w+", normalise_text(text))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one pair: P = LCS / |prediction|, R = LCS / |reference|, F = 2PR / (P + R); 0 when either is empty."""
    pred, ref = words(prediction), words(reference)
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------- text metrics


def exact_match(batch: MetricInput) -> list[Score]:
    """Share of replies equal to the reference after :func:`normalise_text` (NFKC, Turkish case folding, spaces)."""
    hits = [float(normalise_text(p) == normalise_text(r)) for p, r in zip(batch.predictions, batch.references,
                                                                           strict=True)]
    return [mean_score("exact_match", "share of replies equal to the reference after NFKC, Turkish case folding "
                       "and whitespace collapsing", hits)]


def rouge_l(batch: MetricInput) -> list[Score]:
    """Mean ROUGE-L F1 (Lin 2004) over examples, on Unicode word tokens (:func:`words`), case-folded the Turkish way."""
    values = [rouge_l_f(p, r) for p, r in zip(batch.predictions, batch.references, strict=True)]
    return [mean_score("rouge_l", "mean ROUGE-L F1 (longest common word subsequence), Unicode word tokens", values)]


def _sacrebleu_score(metric, sentence_metric, name: str, description: str, batch: MetricInput) -> Score:
    # Per-segment sufficient statistics (n-gram matches and totals, lengths) and the score of
    # their sum: the two methods sacrebleu's own paired bootstrap (sacrebleu.significance) uses.
    # Summing every row gives exactly corpus_score(); tests pin that parity.
    refs = [list(batch.references)]
    stats = np.asarray(metric._extract_corpus_statistics(list(batch.predictions), refs), dtype=np.float64)

    def aggregate(rows: np.ndarray) -> float:
        return float(metric._compute_score_from_stats(rows.sum(axis=0)).score)

    per_example = [float(sentence_metric.sentence_score(p, [r]).score)
                   for p, r in zip(batch.predictions, batch.references, strict=True)]
    return Score(name, description, True, stats, aggregate, per_example)


def bleu(batch: MetricInput) -> list[Score]:
    """Corpus BLEU (Papineni et al. 2002) by sacrebleu, 0-100: default 13a tokenisation, up to 4-grams,
    brevity penalty, case-sensitive. Per example: sentence BLEU with effective order."""
    from sacrebleu.metrics import BLEU

    return [_sacrebleu_score(BLEU(), BLEU(effective_order=True), "bleu",
                             "corpus BLEU (sacrebleu, 13a tokens, 0-100)", batch)]


def chrf(batch: MetricInput) -> list[Score]:
    """Corpus chrF (Popović 2015) by sacrebleu, 0-100: character 6-grams, beta 2. Per example: sentence chrF."""
    from sacrebleu.metrics import CHRF

    return [_sacrebleu_score(CHRF(), CHRF(), "chrf", "corpus chrF (sacrebleu, char 6-grams, beta 2, 0-100)", batch)]


def perplexity(batch: MetricInput) -> list[Score]:
    """Perplexity of the references: exp(total NLL / total tokens) over every reference token.

    The tokens are those of the last assistant turn and its end-of-turn token (so
    a model is also scored on knowing where to stop), each predicted from the
    prompt and the reference tokens before it. Lower is better. Unavailable for
    endpoints.
    """
    description = "exp(mean NLL) of the reference tokens (incl. end of turn) given the prompt; lower is better"
    if batch.nll is None:
        return [Score("perplexity", description, False, None, _mean, [None] * len(batch.predictions))]
    stats = np.asarray(batch.nll, dtype=np.float64).reshape(-1, 2)  # (n, [nll sum, tokens])

    def aggregate(rows: np.ndarray) -> float:
        return math.exp(rows[:, 0].sum() / rows[:, 1].sum())

    per_example = [math.exp(s / n) for s, n in batch.nll]
    return [Score("perplexity", description, False, stats, aggregate, per_example)]


# ----------------------------------------------------------------------------- structured output


def json_fields(batch: MetricInput) -> list[Score]:
    """JSON parse rate, and per-field accuracy against the reference object.

    ``json_parse_rate``: share of replies that are exactly one JSON object.
    ``field_accuracy[f]``: among examples whose reference is a JSON object with
    field ``f``, the share whose reply parses and has ``f`` equal to the
    reference's value (compared as JSON values). The fields are
    ``eval.json_fields`` or every top-level key of the reference objects.
    """
    expected = [parse_json_object(r) for r in batch.references]
    names = batch.section.json_fields
    if names is None:
        names = list(dict.fromkeys(k for e in expected if e is not None for k in e))
    scores = []
    for suffix, parse, how in (("", parse_json_object, "that are one JSON object"),
                               ("_lenient", parse_json_lenient, "that contain a JSON object (text around it allowed)")):
        parsed = [parse(p) for p in batch.predictions]
        scores.append(mean_score(f"json_parse_rate{suffix}", f"share of replies {how}",
                                 [float(p is not None) for p in parsed]))
        scores += [_field_accuracy(f"field_accuracy{suffix}[{name}]", name, parsed, expected) for name in names]
    return scores


def _field_accuracy(label: str, name: str, parsed: list[dict | None], expected: list[dict | None]) -> Score:
    rows = []
    for p, e in zip(parsed, expected, strict=True):
        if e is None or name not in e:
            rows.append((0.0, 0.0))
        else:
            rows.append((float(p is not None and name in p and p[name] == e[name]), 1.0))
    stats = np.asarray(rows, dtype=np.float64).reshape(-1, 2)  # (n, [hit, counted])
    per_example = [hit if counted else None for hit, counted in rows]
    return Score(label, f"share of replies whose JSON field {name!r} equals the reference's", True, stats, _ratio,
                 per_example)


def json_schema(batch: MetricInput) -> list[Score]:
    """Share of replies that parse as JSON and validate against ``eval.schema_file`` (jsonschema, the draft the
    schema's ``$schema`` names; draft 2020-12 when it names none)."""
    import jsonschema

    path = Path(batch.section.schema_file or "")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except (OSError, ValueError) as exc:
        raise AyarError(f"eval.schema_file: cannot read {path}: {exc}") from None
    except jsonschema.SchemaError as exc:
        raise AyarError(f"eval.schema_file: {path} is not a valid JSON Schema: {exc.message}") from None
    validator = validator_cls(schema)
    values = []
    for text in batch.predictions:
        try:
            values.append(float(validator.is_valid(json.loads(text.strip()))))
        except ValueError:
            values.append(0.0)
    return [mean_score("json_schema_valid", f"share of replies that are JSON valid against {path.name}", values)]


# ----------------------------------------------------------------------------- classification


def extract_label(text: str, section: EvalSection) -> str | None:
    """The label of a reply: ``label_field`` of the reply as a JSON object, or the first ``label_regex`` match
    (its first group when it has one); normalised with :func:`normalise_text`. None when there is none."""
    if section.label_field:
        obj = parse_json_object(text)
        value = obj.get(section.label_field) if obj else None
        if value is None or isinstance(value, (dict, list)):
            return None
        label = value if isinstance(value, str) else json.dumps(value)
    else:
        match = re.search(section.label_regex or "", text)
        if match is None:
            return None
        label = match.group(1) if match.re.groups else match.group(0)
        if label is None:
            return None
    return normalise_text(label) or None


def _accuracy(rows: np.ndarray) -> float:
    valid = rows[:, 0] == 1
    return float((rows[valid, 1] == rows[valid, 2]).mean()) if valid.any() else math.nan


def _macro_f1(rows: np.ndarray) -> float:
    rows = rows[rows[:, 0] == 1]
    gold, pred = rows[:, 1], rows[:, 2]
    f1s = []
    for c in np.unique(gold):
        tp = np.sum((gold == c) & (pred == c))
        fp = np.sum((gold != c) & (pred == c))
        fn = np.sum((gold == c) & (pred != c))
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else math.nan


def classification(batch: MetricInput) -> list[Score]:
    """Label accuracy and macro-F1, plus a confusion matrix.

    Labels are extracted by :func:`extract_label` from reply and reference. The
    classes are the reference labels; a reply with no label or another label is
    predicted as ``(other)``. Examples whose reference has no label are left out.
    Macro-F1 is the unweighted mean over the classes present among the
    references of F1 = 2TP / (2TP + FP + FN). The confusion matrix has a row per
    reference label and a column per predicted label, over the classes and
    ``(other)`` last.
    """
    gold = [extract_label(r, batch.section) for r in batch.references]
    labels = sorted({g for g in gold if g is not None})
    index = {label: i for i, label in enumerate(labels)}
    other = len(labels)
    rows = []
    for g, p in zip(gold, batch.predictions, strict=True):
        predicted = index.get(extract_label(p, batch.section) or "", other)
        rows.append((1.0, index[g], predicted) if g is not None else (0.0, -1, -1))
    stats = np.asarray(rows, dtype=np.float64).reshape(-1, 3)  # (n, [has label, gold index, predicted index])
    confusion = np.zeros((other + 1, other + 1), dtype=int)
    for has_label, g, p in rows:
        if has_label:
            confusion[int(g), int(p)] += 1
    per_example = [float(g == p) if has_label else None for has_label, g, p in rows]
    extra = {"labels": [*labels, OTHER_LABEL], "confusion": confusion.tolist(),
             "unlabelled": sum(1 for r in rows if not r[0])}
    return [Score("label_accuracy", "share of replies with the reference's label", True, stats, _accuracy,
                  per_example, extra),
            Score("macro_f1", "unweighted mean of per-class F1 over the reference labels", True, stats, _macro_f1,
                  [None] * len(rows))]


# ----------------------------------------------------------------------------- custom metrics


def load_custom_metric(spec: str) -> Callable[[str, str, dict], float]:
    """Import ``module:function``: ``fn(prediction: str, reference: str, example: dict) -> float``.

    ``example`` is the record as read from the data file (``messages`` and any
    other fields). The value is averaged over examples. Set a
    ``higher_is_better = False`` attribute on the function for a loss-like
    metric; the first line of its docstring becomes the description.

    Raises:
        AyarError: the module or function cannot be found.
    """
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AyarError(f"eval.custom_metrics: cannot import {module_name!r} ({exc}); is it on PYTHONPATH?") from None
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise AyarError(f"eval.custom_metrics: {module_name!r} has no function {function_name!r}")
    return fn


def custom_score(spec: str, batch: MetricInput) -> Score:
    """Score ``batch`` with the custom metric ``spec`` (see :func:`load_custom_metric`)."""
    fn = load_custom_metric(spec)
    values = []
    for i, (p, r, ex) in enumerate(zip(batch.predictions, batch.references, batch.examples, strict=True)):
        value = fn(p, r, ex)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise AyarError(f"eval.custom_metrics: {spec} returned {value!r} for example {i + 1}; "
                            "it must return a finite number")
        values.append(float(value))
    doc = (fn.__doc__ or "").strip().splitlines()
    return mean_score(spec, doc[0] if doc else "custom metric", values, getattr(fn, "higher_is_better", True))


# ----------------------------------------------------------------------------- registry


METRICS: dict[str, MetricFn] = {
    "perplexity": perplexity,
    "exact_match": exact_match,
    "bleu": bleu,
    "chrf": chrf,
    "rouge_l": rouge_l,
    "json": json_fields,
    "json_schema": json_schema,
    "classification": classification,
}


def register_metric(name: str, fn: MetricFn) -> None:
    """Add a metric to :data:`METRICS`, so ``eval.metrics`` can name it.

    Raises:
        ValueError: the name is taken.
    """
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = fn


def compute_scores(batch: MetricInput) -> list[Score]:
    """Every metric the section asks for, then its custom metrics, in that order."""
    scores = [score for name in batch.section.metrics for score in METRICS[name](batch)]
    scores += [custom_score(spec, batch) for spec in batch.section.custom_metrics]
    return scores
