"""Preference pairs from feedback (``ayar synth pairs``): sample k replies, score them, keep best vs worst.

    prompts -> k sampled replies each (the teacher over HTTP, or a run / model generating locally)
            -> a score per reply (judge rubric, JSON Schema, regex, or a Python reward rule)
            -> per prompt: the best and the worst reply, kept when best - worst >= min_gap
            -> pairs.jsonl: {"prompt": messages, "chosen": best, "rejected": worst, "meta": ...}

This is the RLAIF / self-reward loop of the seed in one command: with the student itself as the
sampler and a judge or verifier as the feedback, the pairs are ready for DPO, ORPO, CPO or SimPO.
A prompt whose replies all score the same (or within ``min_gap``) teaches nothing and is skipped,
as is one with fewer than two scored replies; each skip is in ``pairs_rejects.jsonl`` with its reason.
Teacher requests go through the same cache, rate limit, retries and personal-data guard as
``ayar synth``; the replies are redacted before they are written.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.eval.endpoint import ChatEndpoint, EndpointError
from ayar.govern.external import allowing
from ayar.govern.manifest import utc_now
from ayar.synth.config import PairsConfig, SynthSection
from ayar.synth.cost import account
from ayar.synth.run import (
    Clock,
    Outcome,
    check_paths,
    endpoint_for,
    guard_prompts,
    prompt_hash,
    publish,
    reject_lines,
    resolved,
)
from ayar.synth.tasks import Job, Rejected, prompt_of, read_input, with_system


@dataclass(frozen=True)
class Selection:
    """The pair chosen among one prompt's scored replies (indices into the replies)."""

    chosen: int
    rejected: int
    gap: float


def select_pair(replies: Sequence[str], scores: Sequence[float | None], min_gap: float) -> Selection | Rejected:
    """Best vs worst reply by score: the first reply with the highest score against the first with the lowest.

    Replies without a score, and empty replies (no preference record can hold them), are ignored. Returns :class:`Rejected` (``too_few_scored``,
    ``gap_too_small`` or ``identical_replies``) when no useful pair exists: fewer than two scored
    replies, a gap below ``min_gap`` (or no gap at all), or the best and worst replies have the same text.
    """
    scored = [(k, s) for k, s in enumerate(scores) if s is not None and replies[k].strip()]
    if len(scored) < 2:
        return Rejected("too_few_scored", f"{len(scored)} of {len(scores)} replies were scored; at least 2 needed")
    best = max(scored, key=lambda ks: ks[1])  # max/min keep the first of equal scores
    worst = min(scored, key=lambda ks: ks[1])
    gap = best[1] - worst[1]
    if gap <= 0 or gap < min_gap:
        return Rejected("gap_too_small", f"best - worst score = {gap:g}, below min_gap {min_gap:g}")
    if replies[best[0]].strip() == replies[worst[0]].strip():
        return Rejected("identical_replies", "the best and worst replies are the same text")
    return Selection(best[0], worst[0], gap)


def build_pairs(section: SynthSection, base_dir: str | Path = ".", *, governance=None,
                clock: Clock | None = None) -> dict[str, Any]:
    """Run ``synth.pairs``; see the module docstring.

    Returns:
        The summary, also written as ``pairs_manifest.json`` in ``synth.output_dir``.

    Raises:
        AyarError: no ``pairs`` section, unusable prompts, a scorer that cannot be loaded, failed
            teacher requests (answered ones stay cached: run again to resume), or personal data
            bound for a non-local teacher (refuse).
    """
    if section.pairs is None:
        raise AyarError("synth.pairs is not set; add a `pairs:` section (prompts, k, scorer, min_gap)")
    started, clock, base_dir = time.perf_counter(), clock or Clock(), Path(base_dir)
    section = resolved(section, base_dir)
    config, out_dir = section.pairs, Path(section.output_dir)
    check_paths(section, base_dir, (config.output, "pairs_rejects.jsonl", "pairs_manifest.json", "judge_cache.jsonl"))
    if config.scorer == "judge" and section.quality.judge is None:
        raise AyarError("synth.pairs.scorer judge needs synth.quality.judge (the judge model and rubric)")
    scorer = None
    if config.scorer != "judge":
        from ayar.synth.score import verifier

        scorer = verifier(config, base_dir)  # loads the schema / pattern / function before any sampling
    jobs = [Job(where, with_system(section, prompt), context={"prompt": prompt})
            for where, prompt in read_input(config.prompts, base_dir, section.limit, prompt_of)]
    for k, job in enumerate(jobs):
        job.index = k
    n_prompts, outcome = len(jobs), Outcome()
    if config.sampler == "teacher":  # a local student sees the prompts as they are
        jobs, _ = guard_prompts(section, jobs, outcome)
    replies, usage = _sample(section, config, jobs, out_dir, base_dir, governance, clock)
    replies = _redact(section, replies)
    scores = _score(section, config, scorer, jobs, replies, base_dir, governance, clock)
    pairs = _select(section, config, jobs, replies, scores, outcome)
    summary = {"ayar_synth_pairs_version": 1, "created_at": utc_now(), "sampler": config.sampler, "k": config.k,
               "scorer": config.scorer, "min_gap": config.min_gap, "prompts": n_prompts,
               "pairs": len(pairs), "mean_gap": round(sum(p[1].gap for p in pairs) / len(pairs), 4) if pairs else None,
               "rejects": {"total": len(outcome.rejects),
                           "by_reason": dict(Counter(r["reason"] for _, r in outcome.rejects).most_common())},
               "usage": usage, "seconds": round(time.perf_counter() - started, 2)}
    _write(out_dir, section, config, pairs, outcome, summary)
    _record(summary, config, base_dir, governance)
    return summary


def _sample(section: SynthSection, config: PairsConfig, jobs: list[Job], out_dir: Path, base_dir: Path, governance,
            clock: Clock) -> tuple[list[list[str]], dict | None]:
    """k replies per job, from the teacher or a local model; and the teacher's token usage (None: local)."""
    if config.sampler == "teacher":
        endpoint = endpoint_for(section, out_dir, clock)
        t = section.teacher
        requests = [(job.messages, {"temperature": config.temperature, "top_p": t.top_p, "max_tokens": config.max_tokens,
                                    "seed": t.seed + j}) for job in jobs for j in range(config.k)]
        with allowing(bool(governance is not None and governance.allow_external_pii)):
            done = endpoint.complete_requests(requests)
        failed = [d for d in done if isinstance(d, EndpointError)]
        if failed:
            raise AyarError(f"synth pairs: {len(failed)} of {len(done)} teacher requests failed; nothing was written. "
                            f"The answered ones are cached in {endpoint.cache.path}: run the command again to "
                            f"resume. First failure: {failed[0]}")
        texts = [d.text.strip() for d in done]
        usage = account(done, t.model, t.price)
        return [texts[i * config.k:(i + 1) * config.k] for i in range(len(jobs))], usage
    return _sample_locally(config, jobs, base_dir), None


def _sample_locally(config: PairsConfig, jobs: list[Job], base_dir: Path) -> list[list[str]]:
    """k replies per job from a run or model folder (the student), one seeded sampling pass per k."""
    from ayar.data.readers import resolve_path
    from ayar.eval.generate import generate
    from ayar.model.run_folder import load_for_inference

    target = resolve_path(config.sampler, base_dir)
    if not target.exists():
        raise AyarError(f"synth.pairs.sampler: {target} does not exist; give `teacher`, a run folder or a model "
                        "folder")
    model, tokenizer = load_for_inference(target)
    per_seed = [generate(model, tokenizer, [job.messages for job in jobs], max_new_tokens=config.max_tokens,
                         temperature=config.temperature, seed=j) for j in range(config.k)]
    return [[per_seed[j][i].strip() for j in range(config.k)] for i in range(len(jobs))]


def _redact(section: SynthSection, replies: list[list[str]]) -> list[list[str]]:
    if not section.privacy.redact_outputs:
        return replies
    from ayar.govern.external import shared_redactor

    flat = [r for group in replies for r in group]
    done = [text for text, _ in shared_redactor().redact_texts(flat)] if flat else []
    k = len(replies[0]) if replies else 0
    return [done[i * k:(i + 1) * k] for i in range(len(replies))]


def _score(section: SynthSection, config: PairsConfig, scorer, jobs: list[Job], replies: list[list[str]],
           base_dir: Path, governance, clock: Clock) -> list[list[float | None]]:
    prompts = [job.context["prompt"] for job in jobs for _ in range(config.k)]
    flat = [r for group in replies for r in group]
    if scorer is not None:
        scores = scorer(prompts, flat)
    else:
        from ayar.synth.score import judge_scores

        judge = ChatEndpoint(section.quality.judge, Path(section.output_dir) / "judge_cache.jsonl", sleep=clock.sleep)
        with allowing(bool(governance is not None and governance.allow_external_pii)):
            scores = judge_scores(section.quality.judge, judge, base_dir, prompts, flat)
    return [scores[i * config.k:(i + 1) * config.k] for i in range(len(jobs))]


def _select(section: SynthSection, config: PairsConfig, jobs: list[Job], replies: list[list[str]],
            scores: list[list[float | None]], outcome: Outcome) -> list[tuple[Job, Selection, list[str], list]]:
    pairs = []
    for job, group, group_scores in zip(jobs, replies, scores, strict=True):
        chosen = select_pair(group, group_scores, config.min_gap)
        if isinstance(chosen, Rejected):
            outcome.reject(job, "select", chosen)
        else:
            pairs.append((job, chosen, group, group_scores))
    return pairs


def _write(out_dir: Path, section: SynthSection, config: PairsConfig, pairs: list, outcome: Outcome,
           summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, sel, group, scores in pairs:
        origin = {"sampler": config.sampler if config.sampler != "teacher" else section.teacher.model,
                  "scorer": config.scorer, "k": config.k, "prompt_sha256": prompt_hash(job.messages),
                  "scores": {"chosen": scores[sel.chosen], "rejected": scores[sel.rejected], "all": scores},
                  "created_at": summary["created_at"]}
        lines.append(json.dumps({"prompt": job.context["prompt"], "chosen": group[sel.chosen],
                                 "rejected": group[sel.rejected], "meta": {"synthetic": origin}},
                                ensure_ascii=False) + "\n")
    publish(out_dir, {config.output: lines, "pairs_rejects.jsonl": reject_lines(outcome)}, summary,
            "pairs_manifest.json")


def _record(summary: dict[str, Any], config: PairsConfig, base_dir: Path, governance) -> None:
    """The audit ledger entry: the prompts file and the outputs by hash, the sampler, scorer and counts."""
    from ayar.data.readers import resolve_path
    from ayar.govern.ledger import ref
    from ayar.govern.record import open_ledger

    out = Path(summary["output_dir"])
    outputs = {name: {"path": str((out / name).resolve()), "sha256": rec["sha256"]}
               for name, rec in summary["outputs"].items()}
    data = {k: summary[k] for k in ("sampler", "k", "scorer", "min_gap", "prompts", "pairs", "rejects")}
    open_ledger(governance).append("synth_pairs", data, outputs=outputs,
                                   inputs={f"prompts:{Path(config.prompts).name}":
                                           ref(resolve_path(config.prompts, base_dir))})


def summary_line(s: dict[str, Any]) -> str:
    """One line for the console after ``ayar synth pairs``."""
    reasons = ", ".join(f"{k} {v}" for k, v in s["rejects"]["by_reason"].items()) or "none"
    gap = f", mean score gap {s['mean_gap']:g}" if s["mean_gap"] is not None else ""
    return (f"synth pairs: {s['pairs']} pairs from {s['prompts']} prompts (k={s['k']}, scorer {s['scorer']}"
            f"{gap}); skipped: {reasons}; wrote {Path(s['output_dir']) / next(iter(s['outputs']))}")
