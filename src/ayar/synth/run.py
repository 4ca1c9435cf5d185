"""The ``synth`` stage: a teacher model writes data, every record is checked, traced and costed.

    input -> task requests -> privacy (PII check before a non-local teacher) -> teacher (cached,
    rate-limited, retried) -> record per reply -> redact the replies -> length and language
    -> dedup (against existing data, and among the new) -> optional judge score -> write

The output folder receives ``synthetic.jsonl`` (records ``prepare`` reads, each with
``meta.synthetic``: teacher, endpoint, task, prompt hash, time answered), ``rejects.jsonl``
(location, stage, reason and detail of every record left out; never its text) and
``manifest.json`` (counts, tokens, estimated cost, PII figures, output hashes). The request
cache (``cache.jsonl``) makes a re-run send only what was not answered before: an interrupted
run resumes, a finished one costs nothing and writes the same records.

When any request fails for good, nothing is written and the error says how many; the answered
ones stay cached, so running the command again resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ayar.data.formats import RecordError
from ayar.data.readers import resolve_path
from ayar.errors import AyarError
from ayar.eval.endpoint import ChatEndpoint, Completion, EndpointError
from ayar.fsutil import atomic_write
from ayar.govern.external import allowing, is_local
from ayar.govern.manifest import file_record, utc_now, write_json_atomic
from ayar.synth.config import SynthSection
from ayar.synth.cost import account
from ayar.synth.limiter import RateLimiter
from ayar.synth.quality import Deduplicator, check_text, output_text
from ayar.synth.tasks import TASKS, Job, Rejected, schema_validator
from ayar.ui import console

SYNTH_MANIFEST_VERSION = 1
OUTPUTS = ("synthetic.jsonl", "rejects.jsonl")


@dataclass
class Clock:
    """Time as the stage sees it: injectable so tests check rate limits and backoff without waiting."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Outcome:
    """Accepted records and rejects, filled in stage by stage."""

    records: list[tuple[Job, dict, Completion]] = field(default_factory=list)
    rejects: list[tuple[int, dict]] = field(default_factory=list)  # (the job's position, the rejects line)

    def reject(self, job: Job, stage: str, why: Rejected) -> None:
        self.rejects.append((job.index, {"where": job.where, "stage": stage, "reason": why.code,
                                         "detail": why.detail, "prompt_sha256": prompt_hash(job.messages)}))


def prompt_hash(messages: list[dict]) -> str:
    """sha256 of the canonical JSON of the messages sent (the prompt as the teacher saw it)."""
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def endpoint_for(section: SynthSection, out_dir: Path, clock: Clock) -> ChatEndpoint:
    """The teacher, with its cache, rate limiter and backoff clock."""
    t = section.teacher
    limiter = RateLimiter(t.requests_per_minute, t.tokens_per_minute, clock=clock.monotonic, sleep=clock.sleep)
    cache = Path(section.cache) if section.cache else out_dir / "cache.jsonl"
    return ChatEndpoint(t, cache, limiter=limiter, sleep=clock.sleep)


def synthesize(section: SynthSection, base_dir: str | Path = ".", *, governance=None, clock: Clock | None = None,
               show_progress: bool = True) -> dict[str, Any]:
    """Run ``synth.task``; see the module docstring.

    Args:
        section: the recipe's ``synth`` section (relative paths are resolved against ``base_dir``).
        governance: the recipe's ``governance`` section (``allow_external_pii``); None: defaults.
        clock: time functions (tests); default the real ones.

    Returns:
        The summary, also written as ``manifest.json``.

    Raises:
        AyarError: unusable input, personal data bound for a non-local teacher (refuse), or failed
            requests (the answered ones stay cached: run again to resume).
    """
    if section.task is None:
        raise AyarError("synth.task is not set; choose answer, generate, label or rewrite (or run "
                        "`ayar synth pairs`)")
    started, clock = time.perf_counter(), clock or Clock()
    base_dir = Path(base_dir)
    section = resolved(section, base_dir)
    out_dir = Path(section.output_dir)
    check_paths(section, base_dir, ("synthetic.jsonl", "rejects.jsonl", "manifest.json", "judge_cache.jsonl"))
    jobs = TASKS[section.task].jobs(section, base_dir)
    for k, job in enumerate(jobs):
        job.index = k
    validator = (schema_validator(section.label.schema_file, base_dir, "synth.label.schema_file")
                 if section.task == "label" else None)
    dedup = Deduplicator(section.quality.dedup, base_dir)  # reads the existing data before anything is sent
    outcome = Outcome()
    jobs, pii_prompts = guard_prompts(section, jobs, outcome)
    endpoint = endpoint_for(section, out_dir, clock)
    done = _ask(section, endpoint, jobs, governance, show_progress)
    _build(section, jobs, done, validator, outcome)
    pii_outputs = _redact_outputs(section, outcome)
    _check(section, outcome, dedup)
    if section.quality.judge is not None:
        _judge(section, base_dir, outcome, governance, clock)
    summary = _summary(section, jobs, done, endpoint, outcome, pii_prompts, pii_outputs, dedup, started)
    _write(out_dir, section, outcome, summary)
    _record(summary, section, base_dir, governance)
    return summary


def check_paths(section: SynthSection, base_dir: Path, outputs: tuple[str, ...]) -> None:
    """Refuse outputs (and the request cache) that would overwrite an input file, before anything is sent.

    Raises:
        AyarError: naming the clashing setting and path.
    """
    from ayar.fsutil import check_distinct

    named = {"synth.input": section.input, "synth.generate.seeds": section.generate.seeds if section.generate else None,
             "synth.label.schema_file": section.label.schema_file if section.label else None,
             "synth.pairs.prompts": section.pairs.prompts if section.pairs else None,
             **{f"synth.quality.dedup.against[{i}]": p for i, p in enumerate(section.quality.dedup.against)}}
    inputs = {k: resolve_path(v, base_dir) for k, v in named.items() if v is not None}
    out = Path(section.output_dir)
    check_distinct(inputs, {**{f"synth.output_dir: {name}": out / name for name in outputs},
                            "synth.cache": Path(section.cache) if section.cache else out / "cache.jsonl"})


def resolved(section: SynthSection, base_dir: Path) -> SynthSection:
    """``section`` with its output folder and cache made absolute against the recipe's folder."""
    update = {"output_dir": str(resolve_path(section.output_dir, base_dir))}
    if section.cache:
        update["cache"] = str(resolve_path(section.cache, base_dir))
    return section.model_copy(update=update)


# ----------------------------------------------------------------------------- privacy and the teacher


def guard_prompts(section: SynthSection, jobs: list[Job], outcome: Outcome) -> tuple[list[Job], dict[str, int]]:
    """Redact or drop prompts with personal data before a non-local teacher (refuse: the endpoint's guard).

    Returns:
        The jobs to send (masked with ``redact``) and the values found per entity type.
    """
    mode = section.privacy.pii
    if is_local(section.teacher.base_url) or mode == "refuse":
        return jobs, {}
    from ayar.govern.external import shared_redactor

    texts = list(dict.fromkeys(str(m.get("content") or "") for j in jobs for m in j.messages))
    redacted = dict(zip(texts, shared_redactor().redact_texts(texts), strict=True))
    found: Counter[str] = Counter()
    kept = []
    for job in jobs:
        findings = [f for m in job.messages for f in redacted[str(m.get("content") or "")][1]]
        found.update(f.entity_type for f in findings)
        if mode == "drop" and findings:
            kinds = ", ".join(sorted({f.entity_type for f in findings}))
            outcome.reject(job, "privacy", Rejected("pii_in_prompt", f"the prompt holds {kinds}; not sent"))
            continue
        if findings:  # redact: the teacher sees the masked text, the record keeps the masked prompt too
            job.messages = [{**m, "content": redacted[str(m.get("content") or "")][0]} for m in job.messages]
            job.context = _mask_context(job.context, redacted)
        kept.append(job)
    return kept, dict(found.most_common())


def _mask_context(context: dict, redacted: dict) -> dict:
    """The job's prompt/record with the same masks the sent messages got (so nothing unmasked is written)."""
    def mask(value: Any) -> Any:
        if isinstance(value, str):
            return redacted[value][0] if value in redacted else value
        if isinstance(value, list):
            return [mask(v) for v in value]
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        return value

    return mask(context)


def _ask(section: SynthSection, endpoint: ChatEndpoint, jobs: list[Job], governance,
         show_progress: bool) -> list[Completion | EndpointError]:
    t = section.teacher
    params = {"temperature": t.temperature, "top_p": t.top_p, "max_tokens": t.max_tokens, "seed": t.seed}
    requests = [(j.messages, {**params, **j.params}) for j in jobs]
    count = {"n": 0}

    def progress() -> None:
        count["n"] += 1
        if show_progress and (count["n"] % 100 == 0 or count["n"] == len(requests)):
            console.print(f"synth: {count['n']}/{len(requests)} requests done", markup=False)

    allow = bool(governance is not None and governance.allow_external_pii)
    with allowing(allow):
        done = endpoint.complete_requests(requests, progress)
    failed = [k for k, d in enumerate(done) if isinstance(d, EndpointError)]
    if failed:
        answered = len(done) - len(failed)
        raise AyarError(f"synth: {len(failed)} of {len(done)} teacher requests failed; nothing was written. The "
                        f"{answered} answered are cached in {endpoint.cache.path}: run the command again to resume. "
                        f"First failure ({jobs[failed[0]].where}): {done[failed[0]]}")
    return done


# ----------------------------------------------------------------------------- records and checks


def _build(section: SynthSection, jobs: list[Job], done: list, validator: Any, outcome: Outcome) -> None:
    task = TASKS[section.task]
    for job, completion in zip(jobs, done, strict=True):
        try:
            if not completion.text.strip():
                raise Rejected("empty_reply", "the teacher's reply is empty")
            record = task.build(section, job, completion.text, validator)
            output_text(record)  # the record must read back as prepare reads it
        except RecordError as exc:
            outcome.reject(job, "parse", Rejected(exc.code, exc.detail))
        except Rejected as why:
            outcome.reject(job, "parse", why)
            continue
        outcome.records.append((job, record, completion))


def _redact_outputs(section: SynthSection, outcome: Outcome) -> dict[str, int]:
    """Mask personal data in what the teacher wrote (every string of each record)."""
    if not section.privacy.redact_outputs or not outcome.records:
        return {}
    from ayar.govern.external import shared_redactor

    found: Counter[str] = Counter()
    results = shared_redactor().redact_records([r for _, r, _ in outcome.records])
    for k, result in enumerate(results):
        found.update(f.entity_type for f in result.findings)
        job, _, completion = outcome.records[k]
        outcome.records[k] = (job, result.record, completion)
    return dict(found.most_common())


def written_text(task: str, record: dict) -> str | None:
    """What the teacher wrote, for the length and language checks (label: its JSON, no language check)."""
    if "text" in record:
        return record["text"]
    messages = record["messages"]
    if task == "generate":
        return messages[-2]["content"] + "\n" + messages[-1]["content"]
    return messages[-1]["content"]


def _check(section: SynthSection, outcome: Outcome, dedup: Deduplicator) -> None:
    q = section.quality
    language = "tr" if section.task == "generate" and section.generate.language == "tr" else q.language
    if section.task == "label":
        language = "any"  # the reply is JSON
    passed = []
    for job, record, completion in outcome.records:
        why = check_text(written_text(section.task, record), q, language)
        if why is not None:
            outcome.reject(job, "quality", why)
        else:
            passed.append((job, record, completion))
    verdicts = dedup.add([j.where for j, _, _ in passed], [output_text(r) for _, r, _ in passed])
    outcome.records = []
    for item, why in zip(passed, verdicts, strict=True):
        if why is not None:
            outcome.reject(item[0], "dedup", why)
        else:
            outcome.records.append(item)


def _judge(section: SynthSection, base_dir: Path, outcome: Outcome, governance, clock: Clock) -> None:
    from ayar.synth.score import judge_scores

    config = section.quality.judge
    judge = ChatEndpoint(config, Path(section.output_dir) / "judge_cache.jsonl", sleep=clock.sleep)
    prompts = [r["messages"][:-1] if "messages" in r else [{"role": "user", "content": "(text)"}]
               for _, r, _ in outcome.records]
    replies = [r["messages"][-1]["content"] if "messages" in r else r["text"] for _, r, _ in outcome.records]
    with allowing(bool(governance is not None and governance.allow_external_pii)):
        scores = judge_scores(config, judge, base_dir, prompts, replies)
    kept = []
    for (job, record, completion), score in zip(outcome.records, scores, strict=True):
        if score is None:
            outcome.reject(job, "judge", Rejected("unscored", "the judge gave no score (failed or no SCORE line)"))
        elif score < config.threshold:
            outcome.reject(job, "judge", Rejected("low_score", f"judge score {score:g} < {config.threshold:g}"))
        else:
            record["meta_judge_score"] = score
            kept.append((job, record, completion))
    outcome.records = kept


# ----------------------------------------------------------------------------- provenance, summary, write


def provenance(section: SynthSection, job: Job, completion: Completion) -> dict[str, Any]:
    """``meta.synthetic`` of one record: who wrote it, from which prompt, when."""
    url = urlparse(section.teacher.base_url)
    return {"teacher": section.teacher.model,
            "endpoint": f"{url.scheme}://{url.hostname}{f':{url.port}' if url.port else ''}",
            "task": section.task, "prompt_sha256": prompt_hash(job.messages), "answered_at": completion.answered_at,
            "temperature": section.teacher.temperature, "seed": job.params.get("seed", section.teacher.seed)}


def _summary(section: SynthSection, jobs: list[Job], done: list, endpoint: ChatEndpoint, outcome: Outcome,
             pii_prompts: dict, pii_outputs: dict, dedup: Deduplicator, started: float) -> dict[str, Any]:
    by_reason = Counter(r["reason"] for _, r in outcome.rejects)
    cached = sum(1 for d in done if d.cached)
    return {
        "ayar_synth_version": SYNTH_MANIFEST_VERSION, "created_at": utc_now(), "task": section.task,
        "teacher": {"model": section.teacher.model, "endpoint": provenance(section, jobs[0], done[0])["endpoint"]
                    if jobs else section.teacher.base_url, "local": is_local(section.teacher.base_url)},
        "requests": {"jobs": len(jobs), "cached": cached, "answered_now": len(done) - cached,
                     "http_attempts": endpoint.attempts, "rate_limit_wait_seconds":
                         round(endpoint.limiter.waited, 3) if endpoint.limiter else 0.0},
        "usage": account(done, section.teacher.model, section.teacher.price),
        "usage_this_run": account([d for d in done if not d.cached], section.teacher.model, section.teacher.price),
        "records": len(outcome.records),
        "rejects": {"total": len(outcome.rejects), "by_reason": dict(by_reason.most_common())},
        "pii": {"prompts_mode": section.privacy.pii, "found_in_prompts": pii_prompts,
                "redact_outputs": section.privacy.redact_outputs, "found_in_outputs": pii_outputs},
        "dedup": {"existing_records": dedup.existing, "against": section.quality.dedup.against},
        "settings": section.model_dump(mode="json", exclude={"pairs"}),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _write(out_dir: Path, section: SynthSection, outcome: Outcome, summary: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for job, record, completion in outcome.records:
        meta = {"synthetic": provenance(section, job, completion)}
        if "meta_judge_score" in record:
            meta["synthetic"]["judge_score"] = record.pop("meta_judge_score")
        lines.append(json.dumps({**record, "meta": meta}, ensure_ascii=False) + "\n")
    publish(out_dir, {"synthetic.jsonl": lines, "rejects.jsonl": reject_lines(outcome)}, summary, "manifest.json")


def publish(out_dir: Path, files: dict[str, list[str]], summary: dict[str, Any], manifest: str) -> None:
    """Write each JSONL file of ``files`` atomically, then the manifest naming them (written last)."""
    summary["outputs"] = {}
    for name, lines in files.items():
        with atomic_write(out_dir / name) as fh:
            fh.write("".join(lines))
        summary["outputs"][name] = {**file_record(out_dir / name), "records": len(lines)}
    summary["output_dir"] = str(out_dir)
    write_json_atomic(out_dir / manifest, summary)


def reject_lines(outcome: Outcome) -> list[str]:
    """The rejects as JSON lines, in the order of the jobs they came from."""
    return [json.dumps(r, ensure_ascii=False) + "\n" for _, r in sorted(outcome.rejects, key=lambda x: x[0])]


def _record(summary: dict[str, Any], section: SynthSection, base_dir: Path, governance) -> None:
    """The audit ledger entry: the input files and outputs by hash, the teacher, counts and cost (no text)."""
    from ayar.govern.ledger import ref
    from ayar.govern.record import open_ledger

    named = [("input", section.input), ("seeds", section.generate.seeds if section.generate else None),
             *(("dedup_against", p) for p in section.quality.dedup.against)]
    inputs = {f"{kind}:{Path(p).name}": ref(resolve_path(p, base_dir)) for kind, p in named
              if p is not None and resolve_path(p, base_dir).is_file()}
    out = Path(summary["output_dir"])
    outputs = {name: {"path": str((out / name).resolve()), "sha256": rec["sha256"]}
               for name, rec in summary["outputs"].items()}
    data = {k: summary[k] for k in ("task", "teacher", "requests", "records", "rejects", "pii")}
    data["usage"] = {k: summary["usage"][k] for k in ("total_tokens", "estimated_cost", "currency")}
    open_ledger(governance).append("synth", data, inputs=inputs, outputs=outputs)


def summary_line(s: dict[str, Any]) -> str:
    """One line for the console after ``ayar synth``."""
    req, usage, now = s["requests"], s["usage"], s["usage_this_run"]
    cost = (f"; estimated cost {usage['estimated_cost']:.4f} {usage['currency']} in all, "
            f"{now['estimated_cost']:.4f} this run" if usage["estimated_cost"] is not None else
            "; no price known for this model (set synth.teacher.price)")
    reasons = ", ".join(f"{k} {v}" for k, v in s["rejects"]["by_reason"].items()) or "none"
    return (f"synth {s['task']}: {s['records']} records, {s['rejects']['total']} rejected ({reasons}); "
            f"{req['jobs']} requests, {req['cached']} from the cache; {usage['total_tokens']} tokens{cost}; "
            f"wrote {s['output_dir']}")
