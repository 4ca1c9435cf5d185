"""Everything a run folder and the ledger record about a run, gathered once for the model card and Annex IV."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.errors import AyarError


@dataclass
class RunFacts:
    """What is known about one run; every part but ``recipe`` may be missing (None or empty)."""

    run_dir: Path
    recipe: Any
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None
    report: dict[str, Any]
    data_manifest: dict[str, Any] | None
    ledger_path: Path
    entries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # event -> this run's entries
    exports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name

    def cite(self, event: str) -> str:
        """"ledger entries 3, 7" for this run's entries of ``event`` ("" when none)."""
        seqs = [str(e["seq"]) for e in self.entries.get(event, [])]
        return f"ledger entr{'y' if len(seqs) == 1 else 'ies'} {', '.join(seqs)}" if seqs else ""

    def hours(self) -> float | None:
        """Wall-clock training time in hours, from the run manifest."""
        from datetime import datetime

        if not self.manifest:
            return None
        start, end = (datetime.fromisoformat(self.manifest[k].replace("Z", "+00:00"))
                      for k in ("started_at", "ended_at"))
        return (end - start).total_seconds() / 3600


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def gather(run_dir: str | Path) -> RunFacts:
    """Read a run folder, the prepare manifest beside its training data, and its ledger entries.

    Raises:
        AyarError: not a run folder.
    """
    from ayar.eval.report import collect
    from ayar.govern.lineage import backward, links
    from ayar.govern.manifest import MANIFEST_NAME
    from ayar.govern.record import ledger_for_run
    from ayar.recipe import load_recipe

    run = Path(run_dir).resolve()
    if not (run / "recipe.yaml").is_file():
        raise AyarError(f"{run}: not a run folder (no recipe.yaml); pass the output_dir of `ayar train`")
    recipe = load_recipe(run / "recipe.yaml")
    report = _json(run / "report.json") or collect(run)
    ledger = ledger_for_run(run)
    facts = RunFacts(run, recipe, _json(run / MANIFEST_NAME), _json(run / "summary.json"), report,
                     _json(Path(recipe.data.train).with_name("manifest.json")), ledger.path)
    all_entries = ledger.entries()
    mine = [e for e in all_entries if (e.get("data") or {}).get("run_dir") == str(run)]
    trains = [e for e in mine if e.get("event") == "train"]
    upstream = backward(all_entries, trains[-1:]) if trains else []
    for entry in [*mine, *(e for e in upstream if e.get("event") == "prepare")]:
        facts.entries.setdefault(entry["event"], []).append(entry)
    weights = {h for e in trains[-1:] for h in links(e.get("outputs"))}
    facts.entries["serve_load"] = [e for e in all_entries if e.get("event") == "serve_load"
                                   and links(e.get("inputs")) & weights]
    facts.exports = [e for e in mine if e.get("event") == "export"] or _exports_log(run)
    return facts


def _exports_log(run: Path) -> list[dict[str, Any]]:
    """Exports listed in the run's exports.jsonl (runs exported before the ledger existed)."""
    path = run / "exports.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            out.append({"seq": None, "data": {"format": record["format"], "path": record["path"]}})
        except (ValueError, KeyError):
            continue
    return out


def metric_rows(facts: RunFacts) -> list[dict[str, Any]]:
    """The comparison's rows (empty when the run was not evaluated)."""
    return list((facts.report.get("comparison") or {}).get("metrics") or [])


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, "-" for None."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def ci(row: dict[str, Any]) -> str:
    interval = row.get("ci95")
    return f"[{fmt(interval[0])}, {fmt(interval[1])}]" if interval else "-"
