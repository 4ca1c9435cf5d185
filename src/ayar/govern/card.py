"""The model card: a Hugging Face ``README.md`` (YAML metadata + Markdown) for a run and each of its exports.

The metadata is what the Hub reads (``huggingface_hub.ModelCardData``): ``base_model``
(when the base is a hub id), ``license``, ``language``, ``library_name``, ``tags``,
``datasets`` and a ``model-index`` with the evaluation's metrics. The text gives
intended use, the training data (from the data card), evaluation results against
the base with 95% intervals, forgetting and memorisation findings, limitations,
how personal data was handled, compute, and the ledger entries it was drawn from.
Whatever no file records is marked "to be completed by the provider".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ayar.fsutil import atomic_write
from ayar.govern.facts import RunFacts, ci, fmt, gather, metric_rows

TODO = "*To be completed by the provider:*"


# `ayar model fetch` names -> the Hub repositories the weights were converted from (model card base_model).
FETCHED_HUB_IDS = {"gemma-3-270m": "google/gemma-3-270m", "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _read(path: Path) -> dict:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def hub_id(path: str) -> str | None:
    """``path`` when it is a hub id (``org/name``), else the hub id a local model folder came from, else None.

    A folder from ``ayar model fetch`` names it in ``provenance.json``; any other folder may in its
    config's ``_name_or_path``.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        return path if path.count("/") == 1 and not path.startswith((".", "/", "~")) else None
    provenance = _read(folder / "provenance.json")
    candidates = [provenance.get("hub_id"), FETCHED_HUB_IDS.get(provenance.get("name", "")),
                  _read(folder / "config.json").get("_name_or_path")]
    return next((c for c in candidates if isinstance(c, str) and c.count("/") == 1 and not Path(c).exists()), None)


def base_licence(path: str) -> str | None:
    """The base model's licence as ``ayar model fetch`` recorded it, or None."""
    provenance = _read(Path(path).expanduser() / "provenance.json")
    licence = provenance.get("licence")
    return f"{licence} ({provenance['licence_url']})" if licence and provenance.get("licence_url") else licence


def metadata(facts: RunFacts) -> dict[str, Any]:
    """The YAML front matter (the Hub's model card metadata)."""
    r, gov = facts.recipe, facts.recipe.governance
    meta: dict[str, Any] = {}
    base = hub_id(r.model.path)
    if base:
        meta["base_model"] = base
    meta.update(license=gov.license, language=list(gov.language),
                library_name="peft" if r.adapter.type != "full" else "transformers",
                pipeline_tag="text-generation", tags=["ayar", r.method, r.adapter.type])
    dataset = Path(r.data.train).parent.name
    meta["datasets"] = [dataset]
    rows = [row for row in metric_rows(facts) if row.get("tuned") is not None]
    if rows:
        meta["model-index"] = [{"name": facts.name, "results": [{
            "task": {"type": "text-generation", "name": "Text generation"},
            "dataset": {"name": Path((facts.report.get("comparison") or {}).get("dataset", dataset)).name,
                        "type": dataset, "split": "test"},
            "metrics": [{"type": row["name"], "name": f"{row['name']} (tuned)", "value": round(row["tuned"], 6)}
                        for row in rows]}]}]
    return meta


def render(facts: RunFacts) -> str:
    """The whole card: front matter and Markdown body."""
    front = yaml.safe_dump(metadata(facts), sort_keys=False, allow_unicode=True)
    body = [f"# {facts.name}", "", *_details(facts), *_intended(facts), *_training_data(facts),
            *_evaluation(facts), *_audits(facts), *_limitations(facts), *_pii(facts), *_compute(facts),
            *_provenance(facts)]
    return f"---\n{front}---\n\n" + "\n".join(body) + "\n"


def _details(f: RunFacts) -> list[str]:
    r, s = f.recipe, f.summary or {}
    return ["## Model details", "",
            f"- Base model: `{r.model.path}`" + (f" (revision {r.model.revision})" if r.model.revision else ""),
            f"- Method: {r.method}; adapter: {r.adapter.type}"
            + (f" (rank {r.adapter.r}, alpha {r.adapter.alpha:g})" if r.adapter.type != "full" else ""),
            f"- Trainable parameters: {s.get('trainable_parameters', '-')} of {s.get('total_parameters', '-')}",
            f"- Steps: {s.get('steps', '-')}; final training loss {fmt(s.get('final_loss'))}, validation loss "
            f"{fmt(s.get('eval_loss'))}",
            f"- Licence of this model: {r.governance.license}"
            + (f"; the base model's: {base_licence(r.model.path)}" if base_licence(r.model.path) else ""), ""]


def _intended(f: RunFacts) -> list[str]:
    gov = f.recipe.governance
    use = gov.intended_use or f"{TODO} what is this model for, who uses it, and in which decisions?"
    return ["## Intended use", "", use, "",
            "Out of scope: decisions with legal or similarly significant effects on people without human "
            "review; any use outside the purpose below.", "",
            f"Purpose of processing (KVKK): {gov.purpose or TODO + ' the purpose (governance.purpose).'}", ""]


def _training_data(f: RunFacts) -> list[str]:
    d = f.data_manifest
    lines = ["## Training data", ""]
    if d is None:
        return lines + [f"`{f.recipe.data.train}` (not prepared by `ayar prepare`: no data card). "
                        f"{TODO} where the data comes from and what it contains.", ""]
    sizes = d["split"]["sizes"]
    lines += [f"Prepared by `ayar prepare` on {d['created_at']} ({d['kind']} records); the full data card is "
              f"`{Path(f.recipe.data.train).with_name('data_card.md')}`.", "",
              "| split | records |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in sizes.items()), "",
              "Sources: " + ", ".join(f"`{s['name']}` ({s['records_read']} records, sha256 "
                                      f"{s.get('sha256', 'folder')[:16]})" for s in d["sources"]), ""]
    return lines


def _evaluation(f: RunFacts) -> list[str]:
    rows = metric_rows(f)
    lines = ["## Evaluation", ""]
    if not rows:
        pref = f.report.get("preference")
        if pref:
            return lines + [f"Held-out preference pairs: {pref['n_pairs']}; tuned reward accuracy "
                            f"{fmt(pref['tuned']['reward_accuracy'])}.", ""]
        return lines + ["Not evaluated yet: run `ayar eval RUN` and then `ayar card RUN` again.", ""]
    comparison = f.report["comparison"]
    lines += [f"{comparison['n']} held-out examples from `{comparison['dataset']}`; base: "
              f"{comparison['models']['base']}. Intervals: paired bootstrap, 95%.", "",
              "| metric | base | tuned | tuned - base | 95% CI |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['name']}{'' if r['higher_is_better'] else ' (lower is better)'} | {fmt(r['base'])} | "
              f"{fmt(r['tuned'])} | {fmt(r['diff'])} | {ci(r)} |" for r in rows]
    judge = f.report.get("judge")
    if judge:
        lines += ["", f"LLM judge ({judge.get('judge_model')}): tuned wins {judge.get('win')}, ties {judge.get('tie')},"
                      f" loses {judge.get('loss')} of {judge.get('n_pairs')} pairs."]
    return lines + [""]


def _audits(f: RunFacts) -> list[str]:
    lines = ["## Forgetting and memorisation", ""]
    forgetting, memo = f.report.get("forgetting"), f.report.get("memorisation")
    if forgetting:
        lines.append(f"- Forgetting: perplexity on general text {fmt(forgetting.get('base_ppl'))} (base) -> "
                     f"{fmt(forgetting.get('tuned_ppl'))} (tuned), relative change "
                     f"{fmt(forgetting.get('relative_change'))}; {'FLAGGED' if forgetting.get('flag') else 'not flagged'}"
                     f" (threshold {forgetting.get('threshold')}).")
    else:
        lines.append("- Forgetting: not measured.")
    if memo:
        from ayar.eval.memorisation import exposure_summary

        lines.append(f"- Memorisation: {exposure_summary(memo)}.")
    else:
        lines.append("- Memorisation: not measured.")
    return lines + [""]


def _limitations(f: RunFacts) -> list[str]:
    return ["## Limitations", "",
            "- Measured only on the held-out split above; behaviour on other inputs is not established.",
            "- A small fine-tuned model can state wrong facts fluently; keep a human in the loop.",
            f"- {TODO} known failure modes, populations it was not tested on, and residual risks.", ""]


def _pii(f: RunFacts) -> list[str]:
    d = f.data_manifest
    if d is None:
        return ["## Personal data", "", f"{TODO} how personal data in the training data was handled.", ""]
    pii = d["pii"]
    if not pii["enabled"]:
        return ["## Personal data", "", "**Redaction was off**: the training data may hold personal data.", ""]
    found = ", ".join(f"{k} {v}" for k, v in pii["by_entity"].items()) or "none"
    ops = sorted(set(pii["operators"].values()))
    index = d.get("subject_index") or {}
    return ["## Personal data", "",
            f"Detected and redacted before training (Turkish-aware recognizers, operators {', '.join(ops)}): {found}; "
            f"{pii['records_dropped']} records dropped.",
            "Erasure requests: " + ("`ayar audit subject VALUE --kind tckn|email|phone|customer_id` lists the "
                                    "datasets, runs, exports and servers holding a person's records (keyed hashes, "
                                    "no raw identifiers)." if index.get("written") else
                                    "no subject index was built (no PII secret at prepare time)."), ""]


def _compute(f: RunFacts) -> list[str]:
    env = (f.manifest or {}).get("environment") or {}
    gpus = ", ".join(g["name"] for g in env.get("gpus") or []) or "none"
    hours = f.hours()
    return ["## Compute", "",
            f"- Hardware: {env.get('cpu', '-')} ({env.get('cpu_count', '-')} cores), GPUs: {gpus}",
            f"- Training time: {fmt(hours, 3) if hours is not None else '-'} hours (wall clock)",
            f"- Energy and emissions: {TODO} measured energy (kWh) and the grid's carbon intensity.", ""]


def _provenance(f: RunFacts) -> list[str]:
    cites = [c for c in (f.cite("prepare"), f.cite("train"), f.cite("eval"), f.cite("export")) if c]
    return ["## Provenance", "",
            f"Recorded in the audit ledger `{f.ledger_path}`: {'; '.join(cites) or 'no entries'}. "
            "Check it with `ayar audit verify`; trace this model with `ayar audit lineage RUN`.", ""]


def write_cards(run_dir: str | Path) -> list[Path]:
    """Write ``README.md`` into the run folder and every export folder that still exists; returns the paths."""
    from ayar.govern.ledger import ref
    from ayar.govern.record import ledger_for_run

    facts = gather(run_dir)
    text = render(facts)
    folders = [facts.run_dir] + [Path(e["data"]["path"]) for e in facts.exports if Path(e["data"]["path"]).is_dir()]
    written = []
    for folder in dict.fromkeys(folders):
        with atomic_write(folder / "README.md") as fh:
            fh.write(text)
        written.append(folder / "README.md")
    ledger_for_run(facts.run_dir).append("model_card", {"run_dir": str(facts.run_dir)},
                                         outputs={str(p): ref(p) for p in written})
    return written
