"""Baseline vs tuned on the same held-out examples: every metric side by side, with paired bootstrap intervals.

    examples -> prompts (system prompt; few-shot turns for the baseline only)
             -> replies (+ reference log-likelihoods) of baseline and tuned
             -> metrics per system -> differences and 95% intervals
             -> RUN_DIR/eval/comparison.json, examples.jsonl (+ judge.json)

The baseline is what a team would ship without fine-tuning: the base model with
the same system prompt and, optionally, k worked examples from the training data
("prompt engineering first"), or a hosted model behind an OpenAI-compatible API.
"""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ayar.data.read import check_messages, iter_jsonl
from ayar.errors import AyarError, DataError
from ayar.eval.bootstrap import paired_bootstrap_ci
from ayar.eval.config import EndpointConfig, EvalSection, eval_section_from_dict
from ayar.eval.metrics import MetricInput, Score, compute_scores
from ayar.fsutil import atomic_write
from ayar.govern.manifest import write_json_atomic
from ayar.model.run_folder import RunFolder
from ayar.ui import console

LEVEL = 0.95


@dataclass(frozen=True)
class Example:
    """One evaluation example: the prompt messages, the reference reply, and the record as read."""

    id: str
    prompt: list[dict]
    reference: str
    record: dict


@dataclass(frozen=True)
class Target:
    """A model to evaluate: a local folder (model, adapter or run) or an endpoint."""

    label: str
    path: str | None = None
    endpoint: EndpointConfig | None = None
    chat_template: str | None = None
    run: RunFolder | None = None  # the run itself (its recipe already read)


# ----------------------------------------------------------------------------- data and prompts


def load_examples(path: str | Path, n: int | None = None) -> list[Example]:
    """Read ``{"messages": [...]}`` records: the last assistant turn is the reference, what precedes it the prompt.

    The id is the record's ``id`` field, else ``<file name>:<line>``.

    Raises:
        DataError: a missing file, an unusable record (with its line), or no record.
    """
    path = Path(path)
    out: list[Example] = []
    for line, obj in iter_jsonl(path):
        if n is not None and len(out) >= n:
            break
        if "messages" not in obj:
            raise DataError(str(path), line, f"missing field `messages` (fields: {', '.join(obj) or 'none'})",
                            "evaluation data is JSONL of {\"messages\": [...]} conversations")
        try:
            messages = check_messages(obj["messages"])
        except ValueError as exc:
            raise DataError(str(path), line, str(exc)) from None
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        out.append(Example(str(obj.get("id", f"{path.name}:{line}")), messages[:last], messages[last]["content"],
                           obj))
    if not out:
        raise DataError(str(path), None, "no records")
    return out


def few_shot_turns(path: str | Path, k: int, seed: int) -> tuple[list[dict], list[str]]:
    """``k`` examples drawn (seeded) from ``path`` as alternating user/assistant turns, and their ids.

    System messages of the drawn examples are left out: the evaluated prompt keeps its own.

    Raises:
        AyarError: the file holds fewer than ``k`` examples.
    """
    if k == 0:
        return [], []
    pool = load_examples(path)
    if len(pool) < k:
        raise AyarError(f"eval.few_shot: {k} examples asked for, but {path} holds {len(pool)}")
    chosen = random.Random(seed).sample(pool, k)
    turns = [m for ex in chosen for m in [*(m for m in ex.prompt if m["role"] != "system"),
                                          {"role": "assistant", "content": ex.reference}]]
    return turns, [ex.id for ex in chosen]


def build_prompt(prompt: Sequence[dict], system_prompt: str | None, shots: Sequence[dict] = ()) -> list[dict]:
    """The messages a model sees: ``system_prompt`` replacing the data's own (when set), then the
    few-shot turns, then the example's own turns."""
    system = [m for m in prompt if m["role"] == "system"]
    if system_prompt is not None:
        system = [{"role": "system", "content": system_prompt}]
    return [*system, *shots, *(m for m in prompt if m["role"] != "system")]


# ----------------------------------------------------------------------------- targets


def resolve_targets(run: RunFolder, section: EvalSection) -> tuple[Target | None, Target]:
    """The (baseline, tuned) targets the section names; baseline None for ``baseline: none``."""
    recipe = run.recipe

    def path_or_endpoint(spec: str | EndpointConfig) -> Target:
        if isinstance(spec, EndpointConfig):
            return Target(f"{spec.model} at {spec.base_url}", endpoint=spec)
        return Target(spec, path=spec)

    tuned = (Target(str(run.run_dir), path=str(run.run_dir), run=run) if section.tuned is None
             else path_or_endpoint(section.tuned))
    if section.baseline == "none":
        return None, tuned
    if section.baseline == "base":  # the recipe's base model, with the chat template training used
        base = Target(recipe.model.path, path=recipe.model.path, chat_template=recipe.model.chat_template)
    else:
        base = path_or_endpoint(section.baseline)
    if section.few_shot:
        base = Target(f"{base.label} + {section.few_shot}-shot", base.path, base.endpoint, base.chat_template)
    return base, tuned


def load_target(target: Target, section: EvalSection):
    """``(model, tokenizer)`` of a local target, loaded once for everything the evaluation measures;
    None for an endpoint."""
    if target.endpoint is not None:
        return None
    from ayar.model.run_folder import load_for_inference

    return load_for_inference(target.run or target.path, dtype=section.dtype, chat_template=target.chat_template)


def predict(target: Target, loaded, prompts: list[list[dict]], references: list[str], ids: list[str],
            section: EvalSection, cache_path: Path) -> tuple[list[str], list[tuple[float, int]] | None]:
    """Replies of ``target`` and, for a local model when perplexity is asked for, the references' NLL.

    Args:
        loaded: ``(model, tokenizer)`` from :func:`load_target` (None for an endpoint).
    """
    gen = section.generation
    if target.endpoint is not None:
        from ayar.eval.endpoint import ChatEndpoint, generate_with_endpoint

        endpoint = ChatEndpoint(target.endpoint, cache_path)
        return generate_with_endpoint(endpoint, prompts, max_new_tokens=gen.max_new_tokens,
                                      temperature=gen.temperature, top_p=gen.top_p, seed=gen.seed), None
    from ayar.eval.generate import generate
    from ayar.eval.likelihood import reference_nll

    model, tokenizer = loaded
    replies = generate(model, tokenizer, prompts, max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                       top_p=gen.top_p, seed=gen.seed, batch_size=gen.batch_size, stop=gen.stop)
    nll = reference_nll(model, tokenizer, prompts, references, ids=ids) if "perplexity" in section.metrics else None
    return replies, nll


def _free() -> None:
    """Return the memory of models no longer referenced (to the allocator, and CUDA's cache)."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- comparison


def metric_rows(base: list[Score] | None, tuned: list[Score], *, resamples: int, seed: int) -> list[dict]:
    """One row per metric: values, tuned - base, and the paired bootstrap 95% interval of the difference."""
    by_name = {s.name: s for s in base or []}
    rows = []
    for t in tuned:
        b = by_name.get(t.name)
        base_value = b.value if b is not None else None
        diff = t.value - base_value if t.value is not None and base_value is not None else None
        ci = None
        if diff is not None and b is not None and b.stats is not None and t.stats is not None:
            ci = paired_bootstrap_ci(b.stats, t.stats, t.aggregate, resamples=resamples, seed=seed, level=LEVEL)
        rows.append({"name": t.name, "description": t.description, "higher_is_better": t.higher_is_better,
                     "base": base_value, "tuned": t.value, "diff": diff, "ci95": list(ci) if ci else None})
    return rows


def classification_summary(base: list[Score] | None, tuned: list[Score]) -> dict | None:
    """Labels and both confusion matrices (rows: reference label, columns: predicted) when classification ran."""
    t = next((s for s in tuned if "confusion" in s.extra), None)
    if t is None:
        return None
    b = next((s for s in base or [] if "confusion" in s.extra), None)
    return {"labels": t.extra["labels"], "confusion_base": b.extra["confusion"] if b else None,
            "confusion_tuned": t.extra["confusion"], "unlabelled": t.extra["unlabelled"]}


def write_examples(path: Path, examples: Sequence[Example], prompts: Sequence[list[dict]],
                   replies: tuple[list[str] | None, list[str]], scores: tuple[list[Score] | None, list[Score]]) -> None:
    """``examples.jsonl``: per example its prompt, reference, both replies and both systems' per-example scores."""

    def per_example(system: list[Score] | None, i: int) -> dict:
        return {s.name: s.per_example[i] for s in system or [] if s.per_example[i] is not None}

    with atomic_write(path) as fh:
        for i, ex in enumerate(examples):
            fh.write(json.dumps({
                "id": ex.id, "prompt": prompts[i], "reference": ex.reference,
                "base": replies[0][i] if replies[0] else None, "tuned": replies[1][i],
                "scores": {"base": per_example(scores[0], i), "tuned": per_example(scores[1], i)},
            }, ensure_ascii=False, allow_nan=False) + "\n")


def default_data(recipe) -> Path:
    """The prepared test split: ``test.jsonl`` beside the recipe's ``data.train``.

    Raises:
        AyarError: there is none.
    """
    candidate = Path(recipe.data.train).parent / "test.jsonl"
    if not candidate.is_file():
        raise AyarError(f"no test split at {candidate} (beside data.train); pass --data FILE or set eval.data")
    return candidate


def evaluate_run(run_dir: str | Path, section: EvalSection | None = None) -> dict:
    """Evaluate baseline and tuned model of a finished run; write ``RUN_DIR/eval/`` and record it in the ledger.

    Requests to endpoints on other machines go through the external-call guard
    (:mod:`ayar.govern.external`). See :func:`_evaluate_run` for the arguments.
    """
    from ayar.govern.external import guarded
    from ayar.govern.record import record_eval

    with guarded(run_dir):
        result = _evaluate_run(run_dir, section)
    record_eval(run_dir, result)
    return result


def _evaluate_run(run_dir: str | Path, section: EvalSection | None = None) -> dict:
    """Evaluate baseline and tuned model of a finished run; write ``RUN_DIR/eval/``.

    Each model is loaded once: the baseline for its replies (and, for a full fine-tune, kept
    for the forgetting guard), the tuned model for its replies, the forgetting guard and the
    memorisation audit.

    Args:
        run_dir: a folder written by ``ayar train`` (``recipe.yaml`` and ``adapter/`` or ``model/``).
        section: what to evaluate; None reads the run recipe's ``eval:`` (or the defaults).
            Relative paths in it are resolved against the working directory.

    Returns:
        ``{"comparison": <comparison.json>, "judge": <judge.json> or None, "output_dir": str}``.

    Raises:
        AyarError: a missing run, bad data, an unreachable endpoint, ...
    """
    run = RunFolder.open(Path(run_dir).resolve(), finished=False)  # endpoints need only its recipe
    recipe = run.recipe
    section = (section or recipe.eval or EvalSection()).resolved(Path.cwd())
    out = run.eval_dir
    data = Path(section.data) if section.data else default_data(recipe)
    from ayar.eval.preference import is_preference_file, preference_scores

    if is_preference_file(data):  # held-out pairs: reward accuracy and margin instead of generation
        console.print(f"scoring preference pairs from {data}", markup=False)
        scores = preference_scores(run, data, n=section.n)
        write_json_atomic(out / "preference.json", scores)
        from ayar.eval.report import build_report

        _, html = build_report(run.run_dir)
        return {"preference": scores, "output_dir": str(out), "report": str(html)}
    examples = load_examples(data, section.n)
    shots, shot_ids = few_shot_turns(section.few_shot_data or recipe.data.train, section.few_shot, section.seed)
    base_target, tuned_target = resolve_targets(run, section)

    ids = [ex.id for ex in examples]
    references = [ex.reference for ex in examples]
    tuned_prompts = [build_prompt(ex.prompt, section.system_prompt) for ex in examples]
    base_prompts = [build_prompt(ex.prompt, section.system_prompt, shots) for ex in examples]
    console.print(f"evaluating on {len(examples)} examples from {data}", markup=False)

    audits = section.tuned is None  # audits need the run's own weights, not an endpoint or another folder
    base_replies = base_scores = base_model = None
    records = [ex.record for ex in examples]
    if base_target is not None:
        console.print(f"baseline: {base_target.label}", markup=False)
        loaded = load_target(base_target, section)
        base_replies, base_nll = predict(base_target, loaded, base_prompts, references, ids, section,
                                         out / "cache" / "generate.jsonl")
        base_scores = compute_scores(MetricInput(base_replies, references, records, section, base_nll))
        if audits and section.forgetting.enabled and not run.is_adapter and base_target.path == recipe.model.path:
            base_model = loaded[0]  # a full fine-tune's forgetting guard compares with this same base
        del loaded
        _free()
    console.print(f"tuned: {tuned_target.label}", markup=False)
    loaded = load_target(tuned_target, section)
    tuned_replies, tuned_nll = predict(tuned_target, loaded, tuned_prompts, references, ids, section,
                                       out / "cache" / "generate.jsonl")
    tuned_scores = compute_scores(MetricInput(tuned_replies, references, records, section, tuned_nll))

    gen = section.generation
    comparison = {
        "dataset": str(data),
        "n": len(examples),
        "models": {"base": base_target.label if base_target else None, "tuned": tuned_target.label},
        "generation": {**gen.model_dump(), "system_prompt": section.system_prompt, "few_shot": section.few_shot,
                       "few_shot_ids": shot_ids},
        "bootstrap": {"resamples": section.bootstrap, "seed": section.seed, "level": LEVEL, "paired": True},
        "metrics": metric_rows(base_scores, tuned_scores, resamples=section.bootstrap, seed=section.seed),
        "classification": classification_summary(base_scores, tuned_scores),
    }
    write_examples(out / "examples.jsonl", examples, tuned_prompts, (base_replies, tuned_replies),
                   (base_scores, tuned_scores))
    write_json_atomic(out / "comparison.json", comparison)

    judged = None
    if section.judge is not None and base_replies is not None:
        judged = _judge(section, out, ids, tuned_prompts, references, base_replies, tuned_replies)
    else:  # a judge.json left by an earlier evaluation would describe other replies
        for name in ("judge.json", "judge_pairs.jsonl"):
            (out / name).unlink(missing_ok=True)
    if audits:
        from ayar.eval.forgetting import run_forgetting
        from ayar.eval.memorisation import run_memorisation

        model, tokenizer = loaded
        if section.forgetting.enabled:
            run_forgetting(run, section.forgetting, model=model, tokenizer=tokenizer, base_model=base_model)
        if section.memorisation.enabled:
            run_memorisation(run, section.memorisation, model=model, tokenizer=tokenizer)
    del loaded, base_model
    _free()
    from ayar.eval.report import build_report

    _, html = build_report(run.run_dir)
    console.print(f"report: {html}", markup=False)
    return {"comparison": comparison, "judge": judged, "output_dir": str(out), "report": str(html)}


def _judge(section: EvalSection, out: Path, ids, prompts, references, base_replies, tuned_replies) -> dict:
    from ayar.eval.judge import pair_record, run_judge

    console.print(f"judge: {section.judge.model} at {section.judge.base_url}, both answer orders", markup=False)
    summary, pairs = run_judge(section.judge, ids, prompts, references, base_replies, tuned_replies,
                               cache_path=out / "cache" / "judge.jsonl", resamples=section.bootstrap,
                               seed=section.seed)
    with atomic_write(out / "judge_pairs.jsonl") as fh:
        for pair in pairs:
            fh.write(json.dumps(pair_record(pair), ensure_ascii=False) + "\n")
    write_json_atomic(out / "judge.json", summary)
    return summary


def section_for_run(run_dir: str | Path, overrides: Sequence[str] = (), *, data: str | Path | None = None
                    ) -> EvalSection:
    """The ``eval:`` section of a run's recipe.yaml (defaults when it has none), with ``--set`` overrides.

    Overrides are ``key=value`` or ``eval.key=value`` (values parsed as YAML);
    ``data`` replaces ``eval.data``.

    Raises:
        RecipeError: every problem with the section at once.
    """
    from ayar.recipe import apply_overrides

    path = Path(run_dir) / "recipe.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise AyarError(f"{path}: cannot read the run's recipe: {exc}") from None
    tree = {"eval": dict(raw.get("eval") or {})} if isinstance(raw, dict) else {"eval": {}}
    apply_overrides(tree, overrides, str(path), prefix="eval.")
    if data is not None:
        tree["eval"]["data"] = str(data)
    return eval_section_from_dict(tree["eval"], source=str(path))


def print_comparison(result: dict) -> None:
    """The comparison as a table on the console: base, tuned, difference and its 95% interval per metric."""
    from rich.markup import escape
    from rich.table import Table

    if "preference" in result:
        p = result["preference"]
        console.print(f"{p['n_pairs']} held-out pairs ({p['rewards']}): tuned reward accuracy "
                      f"{p['tuned']['reward_accuracy']:.1%}, margin {p['tuned']['margin']:.3f}; prefers the chosen "
                      f"reply: base {p['base']['prefers_chosen']:.1%} -> tuned {p['tuned']['prefers_chosen']:.1%}; "
                      f"wrote {result['output_dir']}/preference.json and {result['report']}", markup=False)
        return
    comparison, judged = result["comparison"], result["judge"]
    table = Table(title=escape(f"{comparison['dataset']} (n={comparison['n']})"))
    for column in ("metric", "base", "tuned", "tuned - base", "95% CI"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def fmt(value: float | None, sign: bool = False) -> str:
        return "-" if value is None else f"{value:+.4g}" if sign else f"{value:.4g}"

    for row in comparison["metrics"]:
        ci = row["ci95"]
        arrow = "" if row["higher_is_better"] else " (lower is better)"
        table.add_row(escape(row["name"] + arrow), fmt(row["base"]), fmt(row["tuned"]), fmt(row["diff"], sign=True),
                      f"[{fmt(ci[0], True)}, {fmt(ci[1], True)}]" if ci else "-")
    console.print(table)
    if judged:
        rate = "-" if judged["win_rate"] is None else f"{judged['win_rate']:.1%}"
        console.print(f"judge {judged['judge_model']}: tuned wins {judged['win']}, ties {judged['tie']}, loses "
                      f"{judged['loss']} of {judged['n_pairs']} pairs (win rate {rate}); failures "
                      f"{judged['failures']}, unparsable {judged['unparsable']}", markup=False)
    console.print(f"wrote {result['output_dir']}/comparison.json and examples.jsonl", markup=False)
