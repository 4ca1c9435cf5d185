"""A draft of the EU AI Act's technical documentation (Regulation (EU) 2024/1689, Annex IV) for a run, plus KVKK.

The nine sections follow Annex IV's numbering; data and data governance (Article 10)
is point 2(d). Every statement is drawn from what the run folder and the audit
ledger record, with the ledger entries cited; everything ayar cannot know (the
provider, the deployment, the risk assessment) is marked "To be completed by the
provider" with the question to answer. The KVKK section (Law No. 6698) carries the
purpose, legal basis, retention, controller and cross-border transfer that
``prepare`` recorded from the recipe's ``governance:`` section.

The draft is written as Markdown and, from the same text, as one HTML page
(markdown-it, raw HTML disabled, so no recorded text can inject markup).
"""

from __future__ import annotations

from pathlib import Path

from ayar.errors import AyarError
from ayar.fsutil import atomic_write
from ayar.govern.facts import RunFacts, ci, fmt, gather, metric_rows

TODO = "**To be completed by the provider:**"
SECTIONS = (
    "1. General description of the AI system",
    "2. Elements of the AI system and the process for its development",
    "3. Monitoring, functioning and control of the AI system",
    "4. Appropriateness of the performance metrics",
    "5. Risk management system (Article 9)",
    "6. Changes to the system through its lifecycle",
    "7. Harmonised standards and other specifications applied",
    "8. EU declaration of conformity (Article 47)",
    "9. Post-market monitoring plan (Article 72)",
)
KVKK = "10. Personal data protection (KVKK, Law No. 6698)"


def todo(question: str) -> str:
    return f"{TODO} {question}"


def _general(f: RunFacts) -> list[str]:
    r, gov = f.recipe, f.recipe.governance
    return [
        f"- Intended purpose: {gov.intended_use or todo('What is the intended purpose of the system, and who uses it?')}",
        f"- Provider: {gov.controller or todo('Name and address of the provider.')}",
        f"- Version: run `{f.name}` ({f.cite('train') or 'no ledger entry'}); base model `{r.model.path}`.",
        "- Interaction with other hardware or software: served through an OpenAI-compatible HTTP API "
        "(`ayar serve`), vLLM or Ollama (see section 2). "
        + todo("Which systems send it inputs and consume its outputs?"),
        f"- Forms in which it is placed on the market: {_exports(f)}",
        "- Hardware it is intended to run on: " + todo("the deployment hardware."),
        "- Instructions for use: the model card (`README.md` in the run folder, `ayar card`). "
        + todo("user-facing instructions for deployers."),
    ]


def _exports(f: RunFacts) -> str:
    if not f.exports:
        return "no export recorded yet (`ayar export`)."
    return "; ".join(f"{e['data']['format']} at `{e['data']['path']}`" + (f" (ledger entry {e['seq']})"
                                                                         if e.get("seq") is not None else "")
                     for e in f.exports)


def _development(f: RunFacts) -> list[str]:
    r, s = f.recipe, f.summary or {}
    lines = [
        "**2(a) Methods and steps.** " f"Pre-trained base model `{r.model.path}` adapted by {r.method} with "
        f"{r.adapter.type}" + (f" (rank {r.adapter.r}, alpha {r.adapter.alpha:g})" if r.adapter.type != "full" else "")
        + f"; {s.get('steps', '-')} optimizer steps, learning rate {r.train.learning_rate:g}, seed {r.train.seed}. "
        f"Recipe sha256 and every input and output hash: {f.cite('train') or 'run_manifest.json'}.",
        "**2(b) Design choices.** " + todo("Why this base model, method and size; trade-offs considered."),
        "**2(c) Architecture and compute.** " + _compute(f),
        "",
        "**2(d) Data and data governance (Article 10).** " + _data(f),
        "",
        "**2(e) Human oversight measures (Article 14).** " + todo("How humans oversee the outputs in use."),
        "**2(f) Pre-determined changes.** " + todo("Changes planned in advance (retraining schedule), if any."),
        "**2(g) Validation and testing.** " + (f"Held-out comparison with the base model; {f.cite('eval')}; see "
                                               "section 4." if f.entries.get("eval") else todo("No evaluation is "
                                               "recorded; run `ayar eval`. How was the system validated?")),
        "**2(h) Cybersecurity.** Weights are loaded from safetensors only, remote code is off, the server binds to "
        "loopback unless given an API key. " + todo("Deployment security measures."),
    ]
    return lines


def _compute(f: RunFacts) -> str:
    env = (f.manifest or {}).get("environment") or {}
    hours = f.hours()
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "no GPU"
    return (f"Trained on {env.get('cpu', 'unknown CPU')} with {gpus}; "
            f"{fmt(hours, 3) if hours is not None else 'unknown'} hours wall clock.")


def _data(f: RunFacts) -> str:
    d = f.data_manifest
    if d is None:
        return (f"Training file `{f.recipe.data.train}` was not prepared by `ayar prepare`. "
                + todo("Provenance, scope, collection and cleaning of the training data."))
    pii = d["pii"]
    found = ", ".join(f"{k} {v}" for k, v in pii["by_entity"].items()) or "none"
    steps = "; ".join(f"{s['step']}: {s['records']}" for s in d["steps"])
    return (f"Sources (by sha256): {', '.join(s['name'] + ' ' + str(s.get('sha256', 'folder'))[:16] for s in d['sources'])}"
            f". Records at each step: {steps}. Personal data detected and "
            f"{'redacted' if pii['enabled'] else 'NOT redacted (redaction off)'}: {found}. Duplicates removed: "
            f"{d['dedup']['exact_removed']} exact, {d['dedup']['near_removed']} near. Split sizes: "
            f"{d['split']['sizes']}. Cross-split leakage resolved by {d['settings']['leakage']['resolve']}. "
            f"({f.cite('prepare') or 'manifest.json'}.) "
            + todo("Is the data relevant and representative for the intended purpose? Which biases were examined?"))


def _monitoring(f: RunFacts) -> list[str]:
    rows = metric_rows(f)
    accuracy = "; ".join(f"{r['name']} {fmt(r['tuned'])}" for r in rows) or "not measured"
    return [f"- Capabilities and limits in performance: {accuracy} on the held-out split ({f.cite('eval') or 'no eval'}).",
            "- Accuracy for specific persons or groups: " + todo("performance per relevant group of persons."),
            "- Foreseeable unintended outcomes and risks to health, safety and fundamental rights: "
            + todo("list them."),
            "- Human oversight: " + todo("who reviews outputs, and when."),
            "- Input data specifications: the chat template the run trained with (in `adapter/` or `model/`); "
            f"maximum length {f.recipe.data.max_length} tokens."]


def _metrics(f: RunFacts) -> list[str]:
    rows = metric_rows(f)
    if not rows:
        return [todo("No evaluation is recorded; run `ayar eval RUN`. Which metrics fit the purpose, and why?")]
    lines = ["| metric | base | tuned | tuned - base | 95% CI |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {fmt(r['base'])} | {fmt(r['tuned'])} | {fmt(r['diff'])} | {ci(r)} |" for r in rows]
    gate = f.recipe.gate
    lines += ["", f"Release gate: {', '.join(f'`{c}`' for c in gate.require)}." if gate else
              "No release gate is configured (recipe `gate:`).",
              todo("Why are these metrics and thresholds appropriate for the intended purpose?")]
    return lines


def _risk(f: RunFacts) -> list[str]:
    forgetting, memo = f.report.get("forgetting"), f.report.get("memorisation")
    hooks = [f"- Release gate enforced by `ayar export` and `ayar serve`; bypasses are recorded "
             f"({f.cite('gate_bypassed') or 'none recorded'})."]
    hooks.append(f"- Forgetting guard: {'flagged' if forgetting and forgetting.get('flag') else 'not flagged'}"
                 if forgetting else "- Forgetting guard: not run.")
    if memo:
        from ayar.eval.memorisation import exposure_summary

        hooks.append(f"- Memorisation audit: {exposure_summary(memo)}.")
    else:
        hooks.append("- Memorisation audit: not run.")
    hooks.append("- External calls with personal data are refused unless allowed; each is recorded "
                 f"({f.cite('external_call') or 'none recorded'}).")
    return hooks + [todo("The risk management system of Article 9: identified risks, their estimation, "
                         "mitigations and residual risks.")]


def _changes(f: RunFacts) -> list[str]:
    events = sorted((e for es in f.entries.values() for e in es), key=lambda e: e["seq"])
    lines = [f"- ledger entry {e['seq']} ({e['time']}): {e['event']}" for e in events]
    return (lines or ["No ledger entries recorded for this run."]) + [todo("Changes made after release, if any.")]


def _standards(f: RunFacts) -> list[str]:
    return [todo("Harmonised standards or common specifications applied (e.g. ISO/IEC 42001, ISO/IEC 23894), or the "
                 "solutions adopted to meet the requirements of Chapter III, Section 2.")]


def _kvkk(f: RunFacts) -> list[str]:
    prepared = f.entries.get("prepare", [])
    recorded = (prepared[-1].get("data") or {}).get("governance", {}) if prepared else {}
    gov = f.recipe.governance.model_dump()
    value = {k: recorded.get(k, gov.get(k)) for k in ("purpose", "legal_basis", "retention_days", "controller",
                                                       "contact", "cross_border_transfer")}
    questions = {"purpose": "For what specific purpose is personal data processed?",
                 "legal_basis": "On which KVKK art. 5/6 ground?",
                 "retention_days": "How long are data and models kept (days)?",
                 "controller": "Who is the data controller?",
                 "contact": "How do data subjects reach the controller?",
                 "cross_border_transfer": "Do data or models leave Türkiye, and under which art. 9 mechanism?"}
    source = f" (recorded by prepare, {f.cite('prepare')})" if prepared else ""
    lines = [f"- {k.replace('_', ' ')}: {v if v not in (None, '') else todo(questions[k])}" for k, v in value.items()]
    return lines + [f"Values above come from the recipe's `governance:` section{source}.",
                    "- Data subject requests (art. 11): `ayar audit subject VALUE --kind tckn|email|phone|customer_id`"
                    " finds the datasets, runs, exports and served adapters that hold a person's records."]


def _paragraphs(lines: list[str]) -> list[str]:
    """A blank line before each bold-led paragraph, so Markdown renders them apart."""
    out: list[str] = []
    for line in lines:
        if line.startswith("**") and out and out[-1] != "":
            out.append("")
        out.append(line)
    return out


def render(facts: RunFacts) -> str:
    """The draft as Markdown."""
    bodies = [_general, _development, _monitoring, _metrics, _risk, _changes, _standards,
              lambda f: [todo("Attach the EU declaration of conformity once drawn up.")],
              lambda f: [todo("The post-market monitoring plan: which signals are collected in use (e.g. the A/B log "
                              "of `ayar serve`, user feedback), how often they are reviewed, and the thresholds that "
                              "trigger retraining or withdrawal.")]]
    out = [f"# Technical documentation (EU AI Act, Annex IV): {facts.name}", "",
           f"Draft generated by ayar from the run folder `{facts.run_dir}` and the audit ledger "
           f"`{facts.ledger_path}`. Statements cite ledger entries; check them with `ayar audit verify`.", ""]
    for title, body in zip(SECTIONS, bodies, strict=True):
        out += [f"## {title}", "", *_paragraphs(body(facts)), ""]
    out += [f"## {KVKK}", "", *_kvkk(facts), ""]
    return "\n".join(out)


def to_html(markdown_text: str, title: str) -> str:
    """One self-contained HTML page from the Markdown (raw HTML in the text is escaped, not passed through)."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown_text)
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;line-height:1.5;padding:0 1rem}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body}</body></html>\n")


def write_docs(run_dir: str | Path, formats: list[str], out: str | Path | None = None) -> list[Path]:
    """Write ``annex_iv.md`` and/or ``annex_iv.html`` into ``out`` (default: the run folder).

    Raises:
        AyarError: an unknown format.
    """
    bad = [f for f in formats if f not in ("md", "html")]
    if bad or not formats:
        raise AyarError(f"--format {','.join(bad) or '(none)'}: choose md, html or both (md,html)")
    facts = gather(run_dir)
    text = render(facts)
    folder = Path(out) if out else facts.run_dir
    written = []
    for fmt_name in formats:
        path = folder / f"annex_iv.{fmt_name}"
        with atomic_write(path) as fh:
            fh.write(text if fmt_name == "md" else to_html(text, f"Annex IV: {facts.name}"))
        written.append(path)
    return written
