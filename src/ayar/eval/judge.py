"""LLM-as-judge: pairwise base vs tuned, each pair judged in both orders.

Judges favour the answer shown first (or second) more often than chance
(Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena").
Every pair is therefore judged twice: once with the base answer as A and the
tuned answer as B, once swapped. Each verdict becomes a vote for the tuned
answer: +1 when it is preferred, -1 when the base answer is, 0 for a tie. The
pair's outcome is the sign of the two votes' sum:

    tuned wins both, or wins one and ties the other  -> win
    base wins both, or wins one and ties the other   -> loss
    both ties, or each answer wins once              -> tie

so a judge that always prefers the first answer shown produces only ties.
``position_consistency`` is the share of judged pairs whose two votes agree.

A verdict is the last line ``VERDICT: A``, ``VERDICT: B`` or ``VERDICT: TIE`` of
the judge's response. A request that fails after retries counts in
``failures``; a response without a verdict counts in ``unparsable``. A pair with
either is left out of the rates and counted as undecided: nothing is dropped
silently. Identical answers are a tie without asking the judge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from string import Template

from ayar.errors import AyarError
from ayar.eval.bootstrap import bootstrap_rates
from ayar.eval.config import JudgeConfig
from ayar.eval.endpoint import ChatEndpoint, EndpointError

OUTCOMES = ("win", "tie", "loss")
_VERDICT = re.compile(r"^[\s*_#>`]*VERDICT\s*:\s*[*_`]*\s*(A|B|TIE)\b", re.IGNORECASE | re.MULTILINE)
_VOTE_FOR_TUNED = {"base_first": {"A": -1, "B": 1, "TIE": 0}, "tuned_first": {"A": 1, "B": -1, "TIE": 0}}


@dataclass
class PairJudgement:
    """Both judgements of one pair; ``outcome`` is None when the pair is undecided."""

    id: str
    base_first: str | None = None  # verdict (A, B or TIE) with the base answer shown as A
    tuned_first: str | None = None  # verdict with the tuned answer shown as A
    outcome: str | None = None
    identical: bool = False  # the same answer twice: a tie, the judge is not asked
    problems: list[str] | None = None


def parse_verdict(text: str) -> str | None:
    """The last ``VERDICT: A|B|TIE`` line of a judge response (markdown emphasis allowed), upper-cased; None if none."""
    matches = _VERDICT.findall(text)
    return matches[-1].upper() if matches else None


def combine(base_first: str, tuned_first: str) -> str:
    """The pair's outcome for the tuned model from its two verdicts (see the module docstring)."""
    votes = _VOTE_FOR_TUNED["base_first"][base_first] + _VOTE_FOR_TUNED["tuned_first"][tuned_first]
    return "win" if votes > 0 else "loss" if votes < 0 else "tie"


def load_rubric(path: str | None) -> Template:
    """The judge prompt template: ``path``, or the bundled rubric.

    Raises:
        AyarError: the file cannot be read or lacks a placeholder.
    """
    try:
        text = Path(path).read_text(encoding="utf-8") if path else (
            resources.files("ayar.eval").joinpath("judge_rubric.txt").read_text(encoding="utf-8"))
    except OSError as exc:
        raise AyarError(f"eval.judge.rubric: cannot read {path}: {exc.strerror}") from None
    missing = [p for p in ("$question", "$answer_a", "$answer_b") if p not in text]
    if missing:
        raise AyarError(f"eval.judge.rubric: {path} lacks {', '.join(missing)}; the judge would not see the answers")
    return Template(text)


def render_question(messages: Sequence[dict]) -> str:
    """The prompt as the judge reads it: the user's text, or every turn under its role when there are several."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)


def judge_prompt(rubric: Template, question: str, reference: str | None, answer_a: str, answer_b: str) -> list[dict]:
    """The single user message sent to the judge."""
    text = rubric.safe_substitute(question=question, reference=reference or "(none given)", answer_a=answer_a,
                                  answer_b=answer_b)
    return [{"role": "user", "content": text}]


def run_judge(
    config: JudgeConfig,
    ids: Sequence[str],
    prompts: Sequence[list[dict]],
    references: Sequence[str],
    base: Sequence[str],
    tuned: Sequence[str],
    *,
    cache_path: str | Path | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict, list[PairJudgement]]:
    """Judge every (base, tuned) pair in both orders.

    Returns:
        The summary written to ``judge.json`` (counts, rates with bootstrap
        intervals, failures, unparsable, position consistency) and one
        :class:`PairJudgement` per pair.
    """
    rubric = load_rubric(config.rubric)
    endpoint = ChatEndpoint(config, cache_path)
    pairs = [PairJudgement(id=i) for i in ids]
    requests, owners = [], []
    for k, pair in enumerate(pairs):
        if base[k].strip() == tuned[k].strip():
            pair.outcome, pair.identical = "tie", True
            continue
        question = render_question(prompts[k])
        reference = references[k] if config.include_reference else None
        for order, (a, b) in (("base_first", (base[k], tuned[k])), ("tuned_first", (tuned[k], base[k]))):
            requests.append(judge_prompt(rubric, question, reference, a, b))
            owners.append((pair, order))
    responses = endpoint.complete_many(requests, temperature=config.temperature, max_tokens=config.max_tokens)

    failures = unparsable = 0
    for (pair, order), response in zip(owners, responses, strict=True):
        if isinstance(response, EndpointError):
            failures += 1
            pair.problems = [*(pair.problems or []), f"{order}: {response}"]
            continue
        verdict = parse_verdict(response)
        if verdict is None:
            unparsable += 1
            pair.problems = [*(pair.problems or []), f"{order}: no VERDICT line in {response[-120:]!r}"]
        setattr(pair, order, verdict)
    for pair in pairs:
        if pair.base_first and pair.tuned_first:
            pair.outcome = combine(pair.base_first, pair.tuned_first)
    return summarise(config.model, pairs, failures, unparsable, resamples=resamples, seed=seed), pairs


def summarise(model: str, pairs: Sequence[PairJudgement], failures: int, unparsable: int, *, resamples: int,
              seed: int) -> dict:
    """The ``judge.json`` object from judged pairs."""
    outcomes = [p.outcome for p in pairs if p.outcome is not None]
    both = [p for p in pairs if p.base_first and p.tuned_first]
    consistent = sum(_VOTE_FOR_TUNED["base_first"][p.base_first] == _VOTE_FOR_TUNED["tuned_first"][p.tuned_first]
                     for p in both)
    counts = {o: outcomes.count(o) for o in OUTCOMES}
    decided = len(outcomes)
    return {
        "judge_model": model,
        "n_pairs": len(pairs),
        **counts,
        "win_rate": counts["win"] / decided if decided else None,
        "tie_rate": counts["tie"] / decided if decided else None,
        "loss_rate": counts["loss"] / decided if decided else None,
        "ci95": {k: list(v) if v else None for k, v in
                 bootstrap_rates(outcomes, OUTCOMES, resamples=resamples, seed=seed).items()},
        "failures": failures,
        "unparsable": unparsable,
        "undecided": len(pairs) - decided,
        "identical": sum(p.identical for p in pairs),
        "position_consistency": consistent / len(both) if both else None,
    }


def pair_record(pair: PairJudgement) -> dict:
    """One line of ``judge_pairs.jsonl``."""
    return asdict(pair)
