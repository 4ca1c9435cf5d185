"""Release gates: conditions on a run's latest evaluation that ``ayar export`` and ``ayar serve`` enforce.

A gate is a list of conditions, each one comparison (all must hold)::

    condition := path OP literal
    path      := NAME ( "." NAME | "[" KEY "]" )*
    OP        := ">=" | "<=" | ">" | "<" | "==" | "!="
    literal   := number | true | false | null | "text" | 'text'

Paths name values of the run's ``report.json`` (what ``ayar eval`` leaves):

- ``tuned.M``, ``base.M``, ``diff.M``: metric ``M`` of the comparison (``exact_match``, ``bleu``,
  ``field_accuracy[category]``, ``label_accuracy``, ...) for the tuned model, the base, and
  tuned - base; ``diff.M.ci95.low`` / ``.high``: the bounds of the paired bootstrap 95% interval.
  ``M`` may be left out (``diff.ci95.low > 0``) when the gate names its ``metric``.
- ``forgetting.flag``, ``forgetting.relative_change``, ``forgetting.tuned_ppl``, ...
- ``memorisation.max_exposure_bits`` (= ``memorisation.canaries.max``), ``mean_exposure_bits``,
  ``membership_auc`` (the larger of the loss and Min-K% AUCs), ``regurgitation_rate``, or any
  path inside memorisation.json;
- ``judge.win_rate``, ``judge.loss_rate``, ...; ``preference.tuned.reward_accuracy``, ...

Parsing is a small hand-written tokenizer: nothing is ever ``eval``-ed. A value the report
lacks (an audit that did not run) fails its condition, saying what is missing.
"""

from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.errors import AyarError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq,
       "!=": operator.ne}
NAMESPACES = ("tuned", "base", "diff", "forgetting", "memorisation", "judge", "preference")
MEMORISATION_ALIASES = {
    "max_exposure_bits": ("canaries", "max"),
    "mean_exposure_bits": ("canaries", "mean"),
    "regurgitation_rate": ("regurgitation", "rate"),
}
# Metrics each `eval.metrics` entry reports (field_accuracy[...] and custom metrics are matched separately).
METRIC_FAMILIES = {
    "perplexity": ("perplexity",), "exact_match": ("exact_match",), "bleu": ("bleu",), "chrf": ("chrf",),
    "rouge_l": ("rouge_l",), "json": ("json_parse_rate", "json_parse_rate_lenient"), "json_schema": ("json_schema_valid",),
    "classification": ("label_accuracy", "macro_f1"),
}
_TOKEN = re.compile(r"""\s*(?:(?P<op>>=|<=|==|!=|>|<)|(?P<string>"[^"]*"|'[^']*')|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)
                        (?:[eE][-+]?\d+)?)|(?P<path>[A-Za-z_][\w.]*(?:\[[^\]]+\][\w.]*)*))""", re.VERBOSE)
_SEGMENT = re.compile(r"([A-Za-z_]\w*)|\[([^\]]+)\]")


@dataclass(frozen=True)
class Condition:
    """One parsed condition: ``path`` as segments (names, and bracketed keys as ``[key]``)."""

    text: str
    path: tuple[str, ...]
    op: str
    value: Any


def parse_condition(text: str) -> Condition:
    """Parse ``path OP literal``.

    Raises:
        ValueError: the text is not one comparison of that shape (the message says why).
    """
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"{text!r}: cannot read {text[pos:].strip()!r}")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    if [kind for kind, _ in tokens][:2] != ["path", "op"] or len(tokens) != 3:
        raise ValueError(f"{text!r}: write one comparison, PATH OP VALUE, e.g. tuned.exact_match >= 0.8")
    (_, path), (_, op), (kind, raw) = tokens
    return Condition(text.strip(), _segments(path, text), op, _literal(kind, raw, text))


def _segments(path: str, text: str) -> tuple[str, ...]:
    parts, pos = [], 0
    for match in _SEGMENT.finditer(path):
        gap = path[pos:match.start()]
        if gap not in ("", "."):
            raise ValueError(f"{text!r}: bad path {path!r}")
        parts.append(match.group(1) if match.group(1) else f"[{match.group(2)}]")
        pos = match.end()
    if path[pos:] or parts[0] not in NAMESPACES:
        raise ValueError(f"{text!r}: a path starts with one of {', '.join(NAMESPACES)}")
    return tuple(parts)


def _literal(kind: str, raw: str, text: str) -> Any:
    if kind == "number":
        return float(raw)
    if kind == "string":
        return raw[1:-1]
    if kind == "path" and raw in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[raw]
    raise ValueError(f"{text!r}: the right-hand side must be a number, true, false, null or a quoted text")


# ----------------------------------------------------------------------------- resolving paths


def _metric_and_rest(cond: Condition, primary: str | None) -> tuple[str | None, tuple[str, ...]]:
    """The metric a tuned./base./diff. path names, and what follows it (``ci95.low``)."""
    rest = cond.path[1:]
    if rest and rest[0] not in ("ci95",):
        name = rest[0] + (rest[1] if len(rest) > 1 and rest[1].startswith("[") else "")
        return name, rest[1 + (name != rest[0]):]
    return primary, rest


def lookup(report: dict[str, Any], cond: Condition, primary: str | None = None) -> tuple[Any, str | None]:
    """The value ``cond.path`` names in ``report``, or ``(None, why it is missing)``."""
    ns = cond.path[0]
    if ns in ("tuned", "base", "diff"):
        comparison = report.get("comparison")
        if not comparison:
            return None, "no comparison in the latest evaluation (run `ayar eval RUN`)"
        metric, rest = _metric_and_rest(cond, primary)
        if metric is None:
            return None, "no metric named (write diff.METRIC.ci95.low, or set gate.metric)"
        row = next((r for r in comparison.get("metrics", []) if r.get("name") == metric), None)
        if row is None:
            return None, f"metric {metric!r} was not measured (measured: " \
                         f"{', '.join(r['name'] for r in comparison.get('metrics', []))})"
        if ns != "diff" or not rest:
            if rest:
                return None, f"{'.'.join(rest)} exists under diff only (diff.{metric}.ci95.low)"
            return row.get(ns), None if row.get(ns) is not None else f"{ns} value of {metric} is missing"
        if rest not in (("ci95", "low"), ("ci95", "high")):
            return None, "after diff.METRIC only ci95.low or ci95.high may follow"
        ci = row.get("ci95")
        return (ci[0 if rest[1] == "low" else 1], None) if ci else (None, f"no 95% interval for {metric}")
    block = report.get(ns)
    if block is None:
        return None, f"{ns} was not run in the latest evaluation"
    path = cond.path[1:]
    if ns == "memorisation":
        if path == ("membership_auc",):
            aucs = [a for a in ((block.get("membership") or {}).get(k) for k in ("loss_auc", "min_k_auc"))
                    if a is not None]
            return (max(aucs), None) if aucs else (None, "no membership AUC (no held-out records)")
        path = MEMORISATION_ALIASES.get(path[0], path) if len(path) == 1 else path
    value: Any = block
    for part in path:
        key = part[1:-1] if part.startswith("[") else part
        if not isinstance(value, dict) or value.get(key) is None:
            return None, f"{'.'.join(cond.path)} is not in the {ns} results"
        value = value[key]
    return value, None


@dataclass(frozen=True)
class Outcome:
    """One condition's result: the value found, whether it holds, and why not."""

    condition: str
    value: Any
    passed: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "value": self.value, "passed": self.passed, "reason": self.reason}


def evaluate(conditions: list[str], report: dict[str, Any], primary: str | None = None) -> list[Outcome]:
    """Every condition against ``report`` (a run's report.json)."""
    out = []
    for text in conditions:
        cond = parse_condition(text)
        value, missing = lookup(report, cond, primary)
        if missing:
            out.append(Outcome(cond.text, None, False, missing))
            continue
        try:
            passed = bool(OPS[cond.op](value, cond.value))
        except TypeError:
            out.append(Outcome(cond.text, value, False, f"cannot compare {value!r} with {cond.value!r}"))
            continue
        out.append(Outcome(cond.text, value, passed, None if passed else f"value is {_fmt(value)}"))
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


# ----------------------------------------------------------------------------- static checks (ayar check)


def static_problems(conditions: list[str], primary: str | None, evaluation) -> list[tuple[int, str]]:
    """Conditions that can never hold with the recipe's ``eval:`` settings (unmeasured metric, audit off).

    Args:
        evaluation: the recipe's ``EvalSection`` (None: the defaults).

    Returns:
        ``(index of the condition, problem)`` pairs.
    """
    from ayar.eval.config import EvalSection

    evaluation = evaluation or EvalSection()
    produced = {name for family in evaluation.metrics for name in METRIC_FAMILIES.get(family, ())}
    produced |= set(evaluation.custom_metrics)
    problems = []
    for i, text in enumerate(conditions):
        cond = parse_condition(text)
        ns = cond.path[0]
        if ns in ("tuned", "base", "diff"):
            metric, _ = _metric_and_rest(cond, primary)
            if metric is None:
                problems.append((i, f"{text!r}: names no metric; write {ns}.METRIC... or set gate.metric"))
            elif not (metric in produced or (metric.startswith(("field_accuracy[", "field_accuracy_lenient["))
                                             and "json" in evaluation.metrics)):
                problems.append((i, f"{text!r}: metric {metric!r} is not measured by eval.metrics "
                                f"({', '.join(evaluation.metrics)})"))
            if ns == "base" or ns == "diff":
                if evaluation.baseline == "none":
                    problems.append((i, f"{text!r}: eval.baseline is none, so there is no {ns} value"))
        elif ns in ("forgetting", "memorisation") and not getattr(evaluation, ns).enabled:
            problems.append((i, f"{text!r}: eval.{ns}.enabled is false"))
        elif ns == "judge" and evaluation.judge is None:
            problems.append((i, f"{text!r}: no eval.judge is configured"))
    return problems


# ----------------------------------------------------------------------------- enforcing


@dataclass
class GateDecision:
    """What a gate check decided for a run: ``status`` is passed, failed, bypassed or none (no gate)."""

    run_dir: str
    status: str
    outcomes: list[Outcome]
    report_sha256: str | None = None

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "report_sha256": self.report_sha256,
                "conditions": [o.to_dict() for o in self.outcomes]}


def read_gate(run_dir: Path):
    """The ``gate:`` section of a run's recipe.yaml, or None."""
    from ayar.recipe import load_recipe

    if not (run_dir / "recipe.yaml").is_file():
        return None
    return load_recipe(run_dir / "recipe.yaml").gate


def decide(run_dir: str | Path, *, bypass: bool = False, check_fresh: bool = True) -> GateDecision:
    """Check a run's latest evaluation (``RUN/report.json``) against its recipe's gate.

    Args:
        check_fresh: also require that the latest evaluation recorded in the ledger was of the
            weights the run holds now (not of an earlier training of the same folder).

    Raises:
        GateError: the gate fails (or there is no evaluation) and ``bypass`` is false; the message
            names every failed condition and the way out.
    """
    from ayar.govern.manifest import sha256_file

    run_dir = Path(run_dir).resolve()
    gate = read_gate(run_dir)
    if gate is None:
        return GateDecision(str(run_dir), "none", [])
    report_path = run_dir / "report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        digest = sha256_file(report_path)
    except (OSError, ValueError):
        report, digest = {}, None
    stale = _stale(run_dir) if check_fresh else None
    if not report.get("comparison") and not report.get("preference"):
        outcomes = [Outcome(c, None, False, "the run has no evaluation (run `ayar eval RUN` first)")
                    for c in gate.require]
    elif stale:
        outcomes = [Outcome(c, None, False, stale) for c in gate.require]
    else:
        outcomes = evaluate(gate.require, report, gate.metric)
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return GateDecision(str(run_dir), "passed", outcomes, digest)
    if bypass:
        return GateDecision(str(run_dir), "bypassed", outcomes, digest)
    lines = "\n".join(f"  FAILED {o.condition}: {o.reason}" for o in failed)
    raise GateError(f"{run_dir}: the release gate fails ({len(failed)} of {len(outcomes)} conditions):\n{lines}\n"
                    "improve the run and evaluate it again, or pass --no-gate (recorded in the audit ledger)")


def _stale(run_dir: Path) -> str | None:
    """Why the latest recorded evaluation does not describe the run's current weights, or None."""
    from ayar.govern.lineage import links
    from ayar.govern.record import ledger_for_run, weights_refs

    evaluations = [e for e in ledger_for_run(run_dir).entries()
                   if e.get("event") == "eval" and (e.get("data") or {}).get("run_dir") == str(run_dir)]
    if not evaluations:
        return None  # evaluated before the ledger existed: report.json is all there is
    evaluated = {k: v for k, v in (evaluations[-1].get("inputs") or {}).items() if k.startswith(("adapter/", "model/"))}
    if links(evaluated) != links(weights_refs(run_dir)):
        return (f"the latest evaluation (ledger entry {evaluations[-1]['seq']}) was of other weights: the run was "
                "trained again since; run `ayar eval RUN` again")
    return None


class GateError(AyarError):
    """A run does not pass its release gate."""
