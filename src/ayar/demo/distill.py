"""The demo's optional distillation stage: the tuned model, served by ``ayar serve``, teaches a smaller student.

    runs/sft (the teacher) -> ayar serve on 127.0.0.1, a free port (a thread of this process)
      -> ayar synth, task answer: the teacher answers the first N training prompts; its replies,
         not the gold answers, become the student's data (data/distill/synthetic.jsonl)
      -> the teacher's replies to the held-out slice: from the main demo's evaluation of the same run
         when it holds them with the same decoding (the server answers one request at a time), else
         from the server
      -> server stopped -> LoRA SFT of the student on the teacher-written records (runs/distill-student)
      -> ayar eval of the student: the 3-shot base vs the tuned student on the held-out slice
      -> teacher, student before and after, and the share of the teacher's score the student keeps

``ayar demo --distill`` runs it after the main stages, ``ayar demo --distill-only`` on the folder
of an earlier demo. The figures go into ``results.json`` under ``distill`` (the main results are
kept) and into the teacher's report as an extra panel.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ayar.demo.profiles import DISTILL, PROFILES, Profile
from ayar.demo.run import GOVERNANCE, LEDGER, StageClock, product_eval, resolve_base, write_recipe
from ayar.errors import AyarError
from ayar.eval.config import EndpointConfig, EvalSection
from ayar.ui import console

STUDENTS = ("smollm2", "tiny")
# Rows of the figures: strict and lenient JSON, the category (strict and lenient parse), tags, whole answer.
REPORTED = ("json_parse_rate", "json_parse_rate_lenient", "field_accuracy[category]",
            "field_accuracy_lenient[category]", "field_accuracy[tags]", "exact_match")
TEACHER_TIMEOUT = 300.0  # seconds for one reply: the server answers one request at a time
CONCURRENCY = 2  # requests in flight: the next one waits in the server's queue while one is generated


def synth_recipe(url: str, model: str, prompts: int) -> dict:
    """``ayar synth`` (task answer) on the first ``prompts`` training products, against the served teacher."""
    return {
        "model": {"path": "../models/unused"},  # the model and data sections are unused by synth
        "data": {"train": "../data/distill/synthetic.jsonl"},
        "synth": {"teacher": {"base_url": f"{url}/v1", "model": model, "api_key_env": None, "temperature": 0.0,
                              "max_tokens": 64, "concurrency": CONCURRENCY, "timeout": TEACHER_TIMEOUT},
                  "task": "answer", "input": "../data/train.jsonl", "limit": prompts,
                  # the shared system prompt makes every product look alike to MinHash; the prompts are
                  # distinct by construction, so only exact duplicates are checked
                  "quality": {"dedup": {"near": False}},
                  # The products are synthetic and hold no personal data, and the redactor takes a title glued
                  # to a word for a name ("drenaj" -> "dr[AD_SOYAD]"), which would corrupt prompts and tags.
                  "privacy": {"redact_outputs": False},
                  "output_dir": "../data/distill"},
        "governance": LEDGER,
    }


def student_recipe(student: str, profile: Profile, epochs: float, n_eval: int) -> dict:
    """LoRA SFT of the student on the teacher-written records; evaluated like the main product run
    (no forgetting or memorisation audit: the student saw no canaries)."""
    train = {k: v for k, v in profile.sft.items() if k != "eval_every"}  # no validation split here
    return {
        "model": {"path": student},
        "data": {"train": "../data/distill/synthetic.jsonl", "max_length": profile.max_length},
        "method": "sft",
        "adapter": profile.lora,
        "train": {**train, "epochs": epochs},
        "output_dir": "../runs/distill-student",
        "governance": GOVERNANCE,
        "eval": {**product_eval(n_eval, profile.eval_batch), "forgetting": {"enabled": False},
                 "memorisation": {"enabled": False}},
    }


def resolve_student(out: Path, student: str, seed: int, pretrain_steps: int) -> tuple[str, Profile]:
    """The student's model folder: SmolLM2 (fetched once; tiny when it cannot be), or the tiny model,
    the demo's own pretrained one when ``--base tiny`` left it, else built here.

    Raises:
        AyarError: an unknown student name.
    """
    if student not in STUDENTS:
        raise AyarError(f"--student {student}: choose one of {', '.join(STUDENTS)}")
    pretrained = out / "runs" / "pretrain" / "model"
    if student == "tiny" and pretrained.is_dir():
        console.print(f"student: the demo's pretrained tiny model, {pretrained}", markup=False)
        return str(pretrained.resolve()), PROFILES["tiny"]
    return resolve_base(out, PROFILES[student], seed, pretrain_steps)


def held_out(section: EvalSection) -> tuple[list, list[list[dict]]]:
    """The eval slice (:class:`ayar.eval.compare.Example` s) and the prompts the tuned student sees for them."""
    from ayar.eval.compare import build_prompt, load_examples

    examples = load_examples(section.data, section.n)
    return examples, [build_prompt(ex.prompt, section.system_prompt) for ex in examples]


def evaluated_replies(teacher_run: Path, examples: list, prompts: list[list[dict]], section: EvalSection
                      ) -> list[str] | None:
    """The teacher's replies to the eval slice from the main demo's evaluation of it (``eval/examples.jsonl``),
    when that evaluation saw every one of these prompts and decoded as ``section`` does; None otherwise.

    The server answers one request at a time, so asking it again would cost about 2 s a product with
    Gemma on 2 cores; the evaluation generated the same greedy replies in batches.
    """
    comparison, rows = teacher_run / "eval" / "comparison.json", teacher_run / "eval" / "examples.jsonl"
    if not comparison.is_file() or not rows.is_file():
        return None
    done = json.loads(comparison.read_text(encoding="utf-8"))["generation"]
    wanted = {**section.generation.model_dump(exclude={"batch_size"}), "system_prompt": section.system_prompt}
    if any(done.get(k) != v for k, v in wanted.items()):
        return None
    by_id = {r["id"]: r for r in map(json.loads, rows.read_text(encoding="utf-8").splitlines())}
    replies = []
    for ex, prompt in zip(examples, prompts, strict=True):
        row = by_id.get(ex.id)
        if row is None or row["prompt"] != prompt or row["reference"] != ex.reference or row["tuned"] is None:
            return None
        replies.append(row["tuned"])
    return replies


def served_replies(url: str, model: str, prompts: list[list[dict]], section: EvalSection, cache: Path) -> list[str]:
    """The served teacher's replies to ``prompts``, decoded as ``section`` says, stripped as eval strips them.

    Raises:
        AyarError: a request failed (the answered ones stay in ``cache``).
    """
    from ayar.eval.endpoint import ChatEndpoint, EndpointError

    gen = section.generation
    endpoint = ChatEndpoint(EndpointConfig(base_url=f"{url}/v1", model=model, api_key_env=None,
                                           concurrency=CONCURRENCY, timeout=TEACHER_TIMEOUT), cache)
    replies = endpoint.complete_many(prompts, max_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                     top_p=gen.top_p, seed=gen.seed, **({"stop": gen.stop} if gen.stop else {}))
    failed = [r for r in replies if isinstance(r, EndpointError)]
    if failed:
        raise AyarError(f"the served teacher failed {len(failed)} of {len(replies)} held-out requests: {failed[0]}")
    return [str(r).strip() for r in replies]


def scores_of(replies: list[str], references: list[str], records: list[dict], section: EvalSection) -> dict:
    """``{metric name: Score}`` of ``replies`` with the eval section's metrics."""
    from ayar.eval.metrics import MetricInput, compute_scores

    return {s.name: s for s in compute_scores(MetricInput(replies, references, records, section))}


def figures(teacher: dict, before: dict, after: dict, section: EvalSection) -> dict:
    """Per reported metric: the three values, after - before and after / teacher, each with its paired
    bootstrap 95% interval (resampled over the same held-out products)."""
    from ayar.eval.bootstrap import paired_bootstrap_ci

    def interval(a, b, contrast: str) -> list[float] | None:
        if a.stats is None or b.stats is None:
            return None
        ci = paired_bootstrap_ci(a.stats, b.stats, b.aggregate, resamples=section.bootstrap, seed=section.seed,
                                 contrast=contrast)
        return list(ci) if ci else None

    rows = {}
    for name in REPORTED:
        t, b, a = teacher.get(name), before.get(name), after.get(name)
        if t is None or a is None:
            continue
        kept = a.value / t.value if a.value is not None and t.value else None
        rows[name] = {"teacher": t.value, "student_before": b.value if b else None, "student_after": a.value,
                      "after_minus_before_ci95": interval(b, a, "difference") if b else None,
                      "kept": kept, "kept_ci95": interval(t, a, "ratio")}
    return rows


def run_distill(out: str | Path = "demo_out", *, base: str | None = None, student: str | None = None,
                prompts: int | None = None, n_eval: int | None = None, student_epochs: float | None = None,
                seed: int = 0, pretrain_steps: int = 350) -> dict:
    """Distil the demo's tuned model (``out/runs/sft``, served) into a student; see the module docstring.

    Args:
        base: the main demo's base (``gemma``, ``smollm2``, ``tiny``), which sets the sizes; None: read
            from ``results.json`` (``gemma`` when there is none).
        student: ``smollm2`` or ``tiny``; None: tiny when the base is tiny, else SmolLM2.
        prompts / n_eval / student_epochs: override the sizes of :data:`ayar.demo.profiles.DISTILL`.

    Returns:
        The ``distill`` entry written into ``out/results.json``.

    Raises:
        AyarError: no finished teacher run in ``out`` (run ``ayar demo`` first), an unknown student, or
            a failure of a stage.
    """
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    out = Path(out)
    teacher_run = out / "runs" / "sft"
    if not (teacher_run / "adapter").is_dir() or not (out / "data" / "train.jsonl").is_file():
        raise AyarError(f"{teacher_run}: no finished product run to serve as the teacher; run `ayar demo --out "
                        f"{out}` first (or `ayar demo --distill`)")
    base = base or _main_base(out)
    sizes = DISTILL[base]
    sizes = replace(sizes, prompts=prompts or sizes.prompts, n_eval=n_eval or sizes.n_eval,
                    student_epochs=student_epochs or sizes.student_epochs)
    student = student or ("tiny" if base == "tiny" else "smollm2")
    clock = StageClock()

    clock.stage(f"8. distillation: the student ({student}) for the teacher {teacher_run}")
    student_path, student_profile = resolve_student(out, student, seed, pretrain_steps)
    student_yaml = write_recipe(out / "recipes" / "distill-student.yaml",
                                       student_recipe(student_path, student_profile, sizes.student_epochs,
                                                      sizes.n_eval))
    section = load_recipe(student_yaml).eval
    ledger = _ledger(out)
    seen = len(ledger.entries())
    teacher = ask_teacher(out, teacher_run, sizes.prompts, section, clock)

    clock.stage(f"10. LoRA SFT of the student on the teacher's {teacher.synthesis['records']} answers")
    train_from_recipe(load_recipe(student_yaml), overwrite=True)

    clock.stage(f"11. ayar eval: the student, 3-shot base vs tuned, on {len(teacher.examples)} held-out products")
    from ayar.eval.compare import evaluate_run, print_comparison

    evaluation = evaluate_run(out / "runs" / "distill-student")
    print_comparison(evaluation)
    clock.end()

    examples = teacher.examples
    references, records = [ex.reference for ex in examples], [ex.record for ex in examples]
    student_rows = [json.loads(line) for line in
                    (out / "runs" / "distill-student" / "eval" / "examples.jsonl").read_text("utf-8").splitlines()]
    rows = figures(scores_of(teacher.replies, references, records, section),
                   scores_of([r["base"] for r in student_rows], references, records, section),
                   scores_of([r["tuned"] for r in student_rows], references, records, section), section)
    result = {
        "teacher": {"run": str(teacher_run.resolve()), "served_as": teacher.name, "url": teacher.url, "base": base,
                    "held_out_replies_from": teacher.replies_from},
        "student": {"name": student_profile.name, "base_model": student_path,
                    "run": str((out / "runs" / "distill-student").resolve()),
                    "report": evaluation["report"]},
        "sizes": {"prompts": sizes.prompts, "n_eval": len(examples), "student_epochs": sizes.student_epochs},
        "synth": teacher.synthesis,
        "teacher_on_train_prompts": _against_gold(out, section),
        "metrics": rows,
        "ledger_events": [{"seq": e["seq"], "event": e["event"]} for e in ledger.entries()[seen:]],
        "stage_seconds": clock.stages,
        "seconds": round(time.perf_counter() - clock.start, 1),
    }
    write_results(out, result)
    report_panel(teacher_run, result)
    print_figures(result)
    return result


@dataclass
class TeacherAnswers:
    """What the served teacher wrote: the synth summary (training prompts), and its held-out replies."""

    name: str  # the run's adapter as the server names it
    url: str  # where it was served (stopped since)
    synthesis: dict
    examples: list  # the held-out examples (ayar.eval.compare.Example)
    replies: list[str]  # the teacher's replies to them
    replies_from: str  # the served teacher, or the main demo's evaluation of the same run


def ask_teacher(out: Path, teacher_run: Path, prompts: int, section: EvalSection, clock: StageClock
                ) -> TeacherAnswers:
    """Serve ``teacher_run`` on loopback, have it answer ``prompts`` training prompts (``ayar synth``) and the
    eval slice (unless the main demo's evaluation already holds those replies), and stop the server (also
    on an error).

    Raises:
        AyarError: the server did not start, a request failed, or every answer was rejected.
    """
    from ayar.serve.launch import ServeOptions, serve_in_background, served_name

    examples, eval_prompts = held_out(section)
    replies = evaluated_replies(teacher_run, examples, eval_prompts, section)
    source = f"{teacher_run / 'eval' / 'examples.jsonl'} (the main demo's evaluation of the teacher)"
    clock.stage(f"9. ayar serve {teacher_run.name}: the teacher answers {prompts} training prompts (ayar synth "
                "answer)")
    name = served_name(str(teacher_run))
    with serve_in_background(ServeOptions(target=str(teacher_run), ab_log=out / "governance" / "ab_log.jsonl"),
                             ready_timeout=TEACHER_TIMEOUT) as server:
        console.print(f"teacher served at {server.url}/v1 as {name!r}", markup=False)
        synthesis = _synthesize(out, server.url, name, prompts)
        if replies is None:
            clock.stage(f"9b. the served teacher on the {len(examples)} held-out products")
            replies = served_replies(server.url, name, eval_prompts, section,
                                     out / "data" / "distill" / "teacher_eval.jsonl")
            source = "the served teacher"
    console.print(f"the teacher's replies to the held-out products: {source}", markup=False)
    if not synthesis["records"]:
        raise AyarError(f"every one of the teacher's {prompts} answers was rejected ("
                        f"{synthesis['rejects']['by_reason']}); see {synthesis['output_dir']}/rejects.jsonl")
    return TeacherAnswers(name, server.url, synthesis, examples, replies, source)


def _main_base(out: Path) -> str:
    """The base the main demo ran on, from its results.json (``gemma`` when there is none)."""
    path = out / "results.json"
    if path.is_file():
        base = json.loads(path.read_text(encoding="utf-8")).get("base")
        if base in DISTILL:
            return base
    return "gemma"


def _ledger(out: Path):
    from ayar.govern.record import open_ledger
    from ayar.recipe import load_recipe

    return open_ledger(load_recipe(out / "recipes" / "distill-student.yaml").governance)


def _synthesize(out: Path, url: str, model: str, prompts: int) -> dict:
    """Run ``ayar synth`` from its recipe (written to ``out/recipes/distill-synth.yaml``); its summary, shortened."""
    from ayar.recipe import load_recipe
    from ayar.synth.run import summary_line, synthesize

    path = write_recipe(out / "recipes" / "distill-synth.yaml", synth_recipe(url, model, prompts))
    loaded = load_recipe(path)
    summary = synthesize(loaded.synth, path.parent, governance=loaded.governance)
    console.print(summary_line(summary), markup=False)
    return {k: summary[k] for k in ("records", "rejects", "requests", "usage", "pii", "seconds", "output_dir")}


def _against_gold(out: Path, section: EvalSection) -> dict:
    """How the teacher's answers on the training prompts compare with their gold answers (what the student
    would have learnt from the human labels instead); the teacher saw these prompts in its own training."""
    records = [json.loads(line) for line in
               (out / "data" / "distill" / "synthetic.jsonl").read_text(encoding="utf-8").splitlines()]
    gold = {r["messages"][1]["content"]: r["messages"][-1]["content"] for r in
            (json.loads(line) for line in (out / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines())}
    replies = [r["messages"][-1]["content"] for r in records]
    references = [gold[r["messages"][1]["content"]] for r in records]
    scores = scores_of(replies, references, records, section)
    return {"n": len(records), "differs_from_gold": sum(a != b for a, b in zip(replies, references, strict=True)),
            **{k: scores[k].value for k in ("json_parse_rate", "field_accuracy[category]", "exact_match")}}


def write_results(out: Path, result: dict) -> None:
    """Put ``result`` under ``distill`` in ``out/results.json``, keeping the rest (written atomically)."""
    from ayar.govern.manifest import write_json_atomic

    path = out / "results.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    write_json_atomic(path, {**results, "distill": result})


def report_panel(teacher_run: Path, result: dict) -> None:
    """The figures as an extra panel (``eval/distill.json``) of the teacher's report, which is rebuilt."""
    from ayar.eval.report import build_report
    from ayar.govern.manifest import write_json_atomic

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    panel = {"teacher": f"{result['teacher']['served_as']}: wrote the training answers through ayar serve; its "
                        f"held-out replies from {result['teacher']['held_out_replies_from']}",
             "student": f"{result['student']['name']}, LoRA SFT on {result['synth']['records']} teacher answers",
             "held-out products": result["sizes"]["n_eval"]}
    for name, row in result["metrics"].items():
        ci = row["kept_ci95"]
        panel[f"{name}: teacher / student before / after"] = " / ".join(
            pct(row[k]) for k in ("teacher", "student_before", "student_after"))
        panel[f"{name}: share kept"] = pct(row["kept"]) + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")
    write_json_atomic(teacher_run / "eval" / "distill.json", panel)
    build_report(teacher_run)


def print_figures(result: dict) -> None:
    """The figures as a table, the synth cost table and the stage times."""
    from rich.table import Table

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    def ci(pair: list[float] | None, sign: bool = False) -> str:
        return "" if not pair else (f" [{pair[0]:+.1%}, {pair[1]:+.1%}]" if sign else
                                    f" [{pair[0]:.1%}, {pair[1]:.1%}]")

    n = result["sizes"]["n_eval"]
    table = Table(title=f"distillation: {n} held-out products, teacher {result['teacher']['served_as']} -> "
                        f"student {result['student']['name']}")
    for column in ("metric", "teacher", "student, 3-shot", "student, distilled", "after - before",
                   "kept = after / teacher"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, row in result["metrics"].items():
        table.add_row(name, pct(row["teacher"]), pct(row["student_before"]), pct(row["student_after"]),
                      (f"{row['student_after'] - row['student_before']:+.1%}" if row["student_before"] is not None
                       else "-") + ci(row["after_minus_before_ci95"], sign=True),
                      pct(row["kept"]) + ci(row["kept_ci95"]))
    console.print(table)
    synth, usage = result["synth"], result["synth"]["usage"]
    cost = Table(title="teacher requests (ayar synth answer, the training prompts)")
    for column in ("requests", "cached", "records", "rejected", "prompt tokens", "completion tokens",
                   "total tokens", "estimated cost", "seconds"):
        cost.add_column(column, justify="right")
    price = "-" if usage["estimated_cost"] is None else f"{usage['estimated_cost']:.4f} {usage['currency']}"
    cost.add_row(str(synth["requests"]["jobs"]), str(synth["requests"]["cached"]), str(synth["records"]),
                 str(synth["rejects"]["total"]), str(usage["prompt_tokens"]), str(usage["completion_tokens"]),
                 str(usage["total_tokens"]), price, f"{synth['seconds']:.0f}")
    console.print(cost)
    gold = result["teacher_on_train_prompts"]
    console.print(f"the teacher's answers on the training prompts: {gold['differs_from_gold']} of {gold['n']} differ "
                  f"from the gold answer; category right {pct(gold['field_accuracy[category]'])}", markup=False)
    events = ", ".join(f"{e['event']} #{e['seq']}" for e in result["ledger_events"])
    console.print(f"audit ledger entries of this stage: {events}", markup=False)
    times = ", ".join(f"{k.split(' ', 1)[0]} {v:.0f} s" for k, v in result["stage_seconds"].items())
    console.print(f"distillation stage finished in {result['seconds']:.0f} s ({times})", markup=False)
