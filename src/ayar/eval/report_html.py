"""The report as one self-contained HTML page, from the dict ``report.json`` holds.

No external resource of any kind: CSS is inline, images are base64 PNG data
URIs, there is no script. Every piece of text that comes from a run (metric
names, prompts, replies, file contents, keys of unknown panels) goes through
:func:`esc` (``html.escape``), so a reply holding ``<script>`` shows as text.
"""

from __future__ import annotations

import html
import json
import math
from typing import Any

from ayar.eval import report_plots as plots

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
.meta, .note, figcaption { color: #666; font-size: .9rem; }
nav a { margin-right: .9rem; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.better { color: #1b7d3a; font-weight: 600; } .worse { color: #b3261e; font-weight: 600; }
.flag { background: #fdecea; border-left: 4px solid #b3261e; padding: .5rem .8rem; }
.ok { background: #eaf6ee; border-left: 4px solid #1b7d3a; padding: .5rem .8rem; }
.notrun { color: #888; font-style: italic; }
.examples td { white-space: pre-wrap; max-width: 22rem; font-size: .85rem; }
img { max-width: 100%; }
"""

SECTIONS = [("training", "Training"), ("comparison", "Base vs tuned"), ("judge", "Judge"),
            ("preference", "Preference"), ("forgetting", "Forgetting"), ("memorisation", "Memorisation"),
            ("examples", "Examples")]


def esc(value: Any) -> str:
    """Text of a run, safe to place in HTML."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell value: numbers to 4 significant digits, None as a dash, containers as JSON; escaped."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
        return esc(text if len(text) <= 300 else text[:300] + "…")
    return esc(value)


def table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    """An HTML table; header and cells are escaped (cells with :func:`fmt`)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{fmt(value)}</td>' if number else f"<td>{fmt(value)}</td>"


def image(png: str | None, caption: str) -> str:
    if png is None:
        return ""
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def not_run(what: str) -> str:
    return f'<p class="notrun">{esc(what)}: not run.</p>'


# ----------------------------------------------------------------------------- panels


def training_panel(r: dict[str, Any]) -> str:
    run, training = r.get("run") or {}, r.get("training")
    parts = [table(["run", ""], [[k, v] for k, v in run.items()])] if run else []
    if training is None:
        return "".join(parts) + not_run("Training metrics (metrics.jsonl)")
    parts.append(image(plots.loss_curves(training), "Training loss by step; dots: validation loss."))
    last = training["loss"][-1][1] if training["loss"] else None
    best = min((v for _, v in training["eval_loss"]), default=None)
    parts.append(table(["steps logged", "last training loss", "best validation loss"],
                       [[len(training["loss"]), last, best]]))
    return "".join(parts)


def comparison_panel(c: dict[str, Any] | None) -> str:
    if c is None:
        return not_run("Comparison (eval/comparison.json)")
    models = c.get("models") or {}
    parts = [f'<p class="meta">{esc(c.get("n", "?"))} examples of {esc(c.get("dataset", "?"))}; base: '
             f'{esc(models.get("base", "?"))}; tuned: {esc(models.get("tuned", "?"))}.</p>']
    metrics = c.get("metrics") or []
    rows = []
    for m in metrics:
        ci = m.get("ci95")
        rows.append("<tr>" + "".join([
            f"<td>{esc(m.get('name'))} {'↑' if m.get('higher_is_better', True) else '↓'}</td>",
            f"<td>{esc(m.get('description') or '')}</td>", _cell(m.get("base")), _cell(m.get("tuned")),
            f'<td class="num {_verdict(m)}">{fmt(m.get("diff"))}</td>',
            f'<td class="num">{"–" if not ci else f"[{fmt(ci[0])}, {fmt(ci[1])}]"}</td>']) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("metric", "what it measures", "base", "tuned", "tuned − base",
                                               "95% CI of the difference"))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    parts.append('<p class="note">Green / red: the 95% interval of the paired difference lies entirely on the '
                 "better / worse side of zero.</p>")
    parts.append(image(plots.metric_bars(metrics), "Base (grey) and tuned (blue); error bar: base + the 95% "
                       "interval of the difference (it crosses the dotted base line when the difference is not "
                       "significant)."))
    if c.get("generation"):
        parts.append("<h3>Decoding</h3>" + table(["setting", "value"], [[k, v] for k, v in c["generation"].items()]))
    cls = c.get("classification")
    if cls:
        labels = cls.get("labels") or []
        for which in ("base", "tuned"):
            matrix = cls.get(f"confusion_{which}")
            if matrix:
                parts.append(f"<h3>Confusion matrix, {which}</h3><p class='note'>Rows: reference label; columns: "
                             "predicted label.</p>")
                parts.append(table(["", *labels], [[label, *row] for label, row in zip(labels, matrix, strict=False)]))
    return "".join(parts)


def _verdict(m: dict[str, Any]) -> str:
    ci = m.get("ci95")
    if not ci or ci[0] is None or ci[1] is None or (ci[0] <= 0 <= ci[1]):
        return ""
    up = ci[0] > 0
    return "better" if up == bool(m.get("higher_is_better", True)) else "worse"


def judge_panel(j: dict[str, Any] | None) -> str:
    if j is None:
        return not_run("LLM judge (eval/judge.json)")
    ci = j.get("ci95") or {}
    names = {"win": "tuned wins", "tie": "tie", "loss": "base wins"}
    rows = [[names[k], j.get(k), j.get(f"{k}_rate"),
             "–" if not ci.get(k) else f"[{fmt(ci[k][0])}, {fmt(ci[k][1])}]"] for k in ("win", "tie", "loss")]
    parts = [f'<p class="meta">Judge: {esc(j.get("judge_model", "?"))}; {esc(j.get("n_pairs", "?"))} pairs, each '
             "judged in both answer orders.</p>",
             table(["outcome", "pairs", "share", "95% CI"], rows),
             image(plots.judge_shares(j), "Share of pairs the tuned model wins, ties and loses (95% intervals)."),
             table(["failures", "unparsable", "position consistency"],
                   [[j.get("failures"), j.get("unparsable"), j.get("position_consistency")]])]
    return "".join(parts)


def human_panel(h: dict[str, Any]) -> str:
    """Human raters: win/tie/loss of the tuned model per rater and pooled (95% intervals), agreement."""

    def cell(r: dict[str, Any], k: str) -> str:
        ci = r.get(f"{k}_ci95")
        return f"{r[k]} ({fmt(r[f'{k}_rate'])}" + (f"; [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "") + ")"

    rows = [[name, r["n"], cell(r, "win"), cell(r, "tie"), cell(r, "loss"), r["tie_bad"]]
            for name, r in [*h["per_rater"].items(), ("pooled", h["pooled"])]]
    systems = h.get("systems") or {}
    agreement = h.get("agreement") or {}
    pairs = [[pair, a["items"], a["kappa"], a["percent_agreement"]] for pair, a in (agreement.get("cohen") or {}).items()]
    fleiss = agreement.get("fleiss") or {}
    judge = h.get("judge_agreement") or {}
    parts = [f'<p class="meta">{esc(systems.get("x", "?"))} against {esc(systems.get("y", "?"))}, blinded and in '
             f'random order; {esc(h.get("ratings"))} ratings of {esc(h.get("rated_items"))} items.</p>',
             table(["rater", "ratings", "wins (share; 95% CI)", "ties", "losses", "both bad"], rows)]
    if pairs:
        parts.append(table(["raters", "items", "Cohen's kappa", "agreement"], pairs))
    if fleiss.get("kappa") is not None:
        parts.append(f"<p>Fleiss' kappa over {esc(fleiss['raters'])} raters and {esc(fleiss['items'])} items: "
                     f"{fmt(fleiss['kappa'])}.</p>")
    if judge.get("ratings"):
        parts.append(f"<p>Agreement with the LLM judge: {fmt(judge['percent_agreement'])} of {esc(judge['ratings'])} "
                     f"ratings (kappa {fmt(judge['kappa'])}).</p>")
    return "".join(parts)


def preference_panel(p: dict[str, Any] | None) -> str:
    if p is None:
        return not_run("Preference evaluation (eval/preference.json)")
    base, tuned = p.get("base") or {}, p.get("tuned") or {}
    keys = list(dict.fromkeys([*base, *tuned]))
    parts = [f'<p class="meta">{esc(p.get("n_pairs", "?"))} preference pairs.</p>',
             table(["measure", "base", "tuned"], [[k, base.get(k), tuned.get(k)] for k in keys])]
    rest = {k: v for k, v in p.items() if k not in ("n_pairs", "base", "tuned")}
    if rest:
        parts.append(key_values(rest))
    return "".join(parts)


def forgetting_panel(f: dict[str, Any] | None) -> str:
    if f is None:
        return not_run("Forgetting check (eval/forgetting.json)")
    change, threshold = f.get("relative_change"), f.get("threshold")
    text = (f"General-text perplexity went from {fmt(f.get('base_ppl'))} to {fmt(f.get('tuned_ppl'))} "
            f"({'–' if change is None else f'{change:+.1%}'}; flagged above "
            f"{'–' if threshold is None else f'+{threshold:.0%}'}).")
    banner = (f'<p class="flag"><strong>Flag:</strong> {text} The tuned model may have forgotten general '
              "language.</p>" if f.get("flag") else f'<p class="ok">{text}</p>')
    return (banner + f'<p class="meta">Texts: {esc(f.get("dataset", "?"))}.</p>'
            + image(plots.perplexities(f), "Perplexity of general text, base vs tuned (lower is better)."))


def memorisation_panel(m: dict[str, Any] | None) -> str:
    if m is None:
        return not_run("Memorisation audit (eval/memorisation.json)")
    parts = ["<h3>Canary exposure</h3>"]
    c = m.get("canaries")
    if not c:
        parts.append(not_run("Canary exposure (no canaries were planted by prepare)"))
    else:
        parts.append(table(["canaries", "mean exposure", "max exposure", "chance level", "maximum (log2 |R|)",
                            "controls (never planted)"],
                           [[len(c["exposures"]), c.get("mean"), c.get("max"), c.get("chance_level"),
                             c.get("candidate_space_log2"), c.get("control_exposures")]]))
        parts.append(image(plots.exposures(c), "Exposure of each planted canary (blue) and of unplanted control "
                           "values (grey), in bits."))
        parts.append(f'<p class="note">Method: {esc(c.get("method", ""))}.</p>')
    mem = m.get("membership") or {}
    parts.append("<h3>Membership inference</h3>")
    parts.append(table(["loss AUC", f"Min-{fmt(mem.get('k'))}% AUC", "training records", "held-out records"],
                       [[mem.get("loss_auc"), mem.get("min_k_auc"), mem.get("n_train"), mem.get("n_heldout")]]))
    parts.append('<p class="note">ROC AUC of telling training records from held-out ones by the model\'s '
                 "likelihood: 0.5 means no signal, 1.0 perfect separation.</p>")
    reg = m.get("regurgitation") or {}
    parts.append("<h3>Verbatim regurgitation</h3>")
    parts.append(table(["prefix tokens", "continuation tokens", "rate", "records"],
                       [[reg.get("prefix_tokens"), reg.get("continuation_tokens"), reg.get("rate"), reg.get("n")]]))
    return "".join(parts)


def examples_panel(examples: list[dict[str, Any]] | None, total: int | None) -> str:
    if not examples:
        return not_run("Example generations (eval/examples.jsonl)")
    rows = []
    for e in examples:
        prompt = e.get("prompt")
        shown = ("\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt if isinstance(m, dict))
                 if isinstance(prompt, list) else prompt)
        scores = e.get("scores") or {}
        rows.append([e.get("id"), shown, e.get("reference"), e.get("base"), e.get("tuned"),
                     _scores(scores.get("base")), _scores(scores.get("tuned"))])
    note = f'<p class="meta">{len(examples)} of {total} examples.</p>' if total else ""
    return note + table(["id", "prompt", "reference", "base", "tuned", "base scores", "tuned scores"], rows,
                        "examples")


def _scores(scores: dict[str, Any] | None) -> str:
    if not scores:
        return ""
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())


def key_values(data: Any) -> str:
    """Any JSON value as a two-column table of dotted keys and values."""
    rows = [[k, v] for k, v in _flatten(data)]
    return table(["key", "value"], rows)


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict) and data:
        return [row for k, v in data.items() for row in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, list) and all(not isinstance(v, (dict, list)) for v in data):
        return [(prefix or "value", ", ".join(fmt(v) for v in data) if data else "[]")]
    return [(prefix or "value", data)]


# ----------------------------------------------------------------------------- page


def _drawn(r: dict[str, Any], source: str, panel, *args: Any) -> str:
    """A panel's HTML; a file of an unexpected shape is listed in ``r["problems"]`` instead of stopping the page."""
    try:
        return panel(*args)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        r["problems"].append(f"{source}: unexpected content, panel not drawn ({type(exc).__name__}: {exc})")
        return '<p class="notrun">Not drawn: see the inputs that could not be read, at the top.</p>'


def render(r: dict[str, Any]) -> str:
    """The whole page for the report dict built by :func:`ayar.eval.report.collect`."""
    extra = r.get("extra") or {}
    r.setdefault("problems", [])
    panels = {
        "training": _drawn(r, "training", training_panel, r),
        "comparison": _drawn(r, "comparison.json", comparison_panel, r.get("comparison")),
        "judge": _drawn(r, "judge.json", judge_panel, r.get("judge")),
        "preference": _drawn(r, "preference.json", preference_panel, r.get("preference")),
        "forgetting": _drawn(r, "forgetting.json", forgetting_panel, r.get("forgetting")),
        "memorisation": _drawn(r, "memorisation.json", memorisation_panel, r.get("memorisation")),
        "examples": _drawn(r, "examples.jsonl", examples_panel, r.get("examples"), r.get("examples_total")),
    }
    shown = list(SECTIONS)
    if r.get("human") is not None:  # human evaluation is optional: no "not run" panel without it
        panels["human"] = _drawn(r, "human.json", human_panel, r["human"])
        shown.insert(3, ("human", "Human evaluation"))
    sections = [(f"extra-{i}", name) for i, name in enumerate(extra)]
    nav = " ".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in [*shown, *sections])
    body = [f'<section id="{key}"><h2>{esc(title)}</h2>{panels[key]}</section>' for key, title in shown]
    body += [f'<section id="{key}"><h2>{esc(name)}</h2>{key_values(extra[name])}</section>' for key, name in sections]
    problems = "".join(f"<li>{esc(p)}</li>" for p in r.get("problems") or [])
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ayar report: {esc(r.get('run_name', ''))}</title><style>{CSS}</style></head><body>",
        f"<h1>ayar report: {esc(r.get('run_name', ''))}</h1>",
        f'<p class="meta">Run folder {esc(r.get("run_dir", ""))}; built {esc(r.get("created_at", ""))}. '
        "Every number here is also in report.json.</p>",
        f"<nav>{nav}</nav>",
        f'<div class="flag"><strong>Inputs that could not be read:</strong><ul>{problems}</ul></div>' if problems
        else "",
        *body,
        "</body></html>",
        "",
    ])
