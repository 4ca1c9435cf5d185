"""The workspace as the workbench sees it: run folders, their status, figures, curves and ledger events.

A workspace is a folder; every folder under it (to :data:`MAX_DEPTH` levels) that holds
a ``recipe.yaml`` and something training wrote (``metrics.jsonl``, ``summary.json``,
``adapter/`` or ``model/``) is a run. Recipes the user may launch are the other
``*.yaml`` files with a ``model`` and an ``output_dir``. Everything here reads files
only (no model is loaded) and tolerates a run being written while it is read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_DEPTH = 3
SKIP = {".git", ".venv", "node_modules", "__pycache__", "checkpoints", "adapter", "model", "eval", "export",
        ".ayar-ui"}
RUNNING_WINDOW_S = 120.0  # a run whose metrics.jsonl changed this recently, without summary.json, is running


@dataclass
class Run:
    """One run folder's headline facts (what the runs table shows)."""

    name: str  # its path relative to the workspace, with /
    path: Path
    method: str | None = None
    base: str | None = None
    data: str | None = None
    status: str = "incomplete"  # running, finished, incomplete
    step: int | None = None
    final_loss: float | None = None
    eval_loss: float | None = None
    headline: str | None = None  # the first evaluation metric, tuned vs base
    gate: str = "none"
    recipe: dict[str, Any] = field(default_factory=dict)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _walk(root: Path, depth: int = 0):
    """Folders under ``root`` (``root`` itself first), pruned at ``SKIP`` names and ``MAX_DEPTH``."""
    yield root
    if depth >= MAX_DEPTH:
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SKIP)
    except OSError:
        return
    for child in children:
        yield from _walk(child, depth + 1)


def is_run(folder: Path) -> bool:
    return (folder / "recipe.yaml").is_file() and any(
        (folder / n).exists() for n in ("metrics.jsonl", "summary.json", "adapter", "model"))


def find_runs(workspace: Path) -> list[Run]:
    """Every run under ``workspace``, newest first."""
    runs = [read_run(workspace, folder) for folder in _walk(workspace) if is_run(folder)]
    return sorted(runs, key=lambda r: _mtime(r.path), reverse=True)


def _mtime(folder: Path) -> float:
    times = [p.stat().st_mtime for p in (folder / "metrics.jsonl", folder / "summary.json", folder / "recipe.yaml")
             if p.exists()]
    return max(times, default=0.0)


def read_run(workspace: Path, folder: Path) -> Run:
    """The run in ``folder`` (which :func:`is_run`)."""
    recipe = _read_yaml(folder / "recipe.yaml")
    name = folder.relative_to(workspace).as_posix() if folder != workspace else folder.name
    run = Run(name=name, path=folder, recipe=recipe, method=recipe.get("method"),
              base=(recipe.get("model") or {}).get("path"), data=(recipe.get("data") or {}).get("train"))
    summary = read_json(folder / "summary.json")
    metrics = folder / "metrics.jsonl"
    if isinstance(summary, dict):
        run.status = "finished"
        run.step, run.final_loss = summary.get("steps"), summary.get("final_loss")
        run.eval_loss = summary.get("eval_loss")
    elif metrics.is_file() and time.time() - metrics.stat().st_mtime < RUNNING_WINDOW_S:
        run.status = "running"
    curves = read_curves(folder)
    if run.step is None and curves["loss"]:
        run.step, run.final_loss = int(curves["loss"][-1][0]), curves["loss"][-1][1]
    comparison = read_json(folder / "eval" / "comparison.json")
    if isinstance(comparison, dict) and comparison.get("metrics"):
        row = comparison["metrics"][0]
        run.headline = f"{row.get('name')}: {_num(row.get('base'))} -> {_num(row.get('tuned'))}"
    run.gate = gate_status(folder)
    return run


def _num(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def gate_status(folder: Path) -> str:
    """The release gate's decision on the run's latest report: passed, failed, none (no gate) or unknown."""
    from ayar.errors import AyarError
    from ayar.govern.gates import GateError, decide

    try:
        return decide(folder, check_fresh=False).status
    except GateError:
        return "failed"
    except (AyarError, OSError, ValueError, KeyError, TypeError):
        return "unknown"


def read_curves(folder: Path) -> dict[str, list[list[float]]]:
    """``{"loss": [[step, value], ...], "eval_loss": [...]}`` from ``metrics.jsonl`` (a torn last line skipped)."""
    curves: dict[str, list[list[float]]] = {"loss": [], "eval_loss": []}
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return curves
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        for key in curves:
            if isinstance(row, dict) and isinstance(row.get(key), (int, float)) and isinstance(row.get("step"), int):
                curves[key].append([row["step"], float(row[key])])
    return curves


def find_recipes(workspace: Path) -> list[Path]:
    """Recipes that can be launched: ``*.yaml`` with ``model`` and ``output_dir``, outside run folders."""
    out = []
    for folder in _walk(workspace):
        if is_run(folder):
            continue
        for path in sorted(folder.glob("*.y*ml")):
            raw = _read_yaml(path)
            if "model" in raw and "output_dir" in raw:
                out.append(path)
    return out


def ledger_events(folder: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The audit ledger's entries that name this run folder, newest last (at most ``limit``)."""
    from ayar.govern.record import ledger_for_run

    where = str(folder.resolve())
    try:
        entries = ledger_for_run(folder).entries()
    except Exception:  # an unreadable ledger is shown as none; `ayar audit verify` tells why
        return []
    mine = [e for e in entries if where in json.dumps(e.get("data", {}), ensure_ascii=False)]
    return mine[-limit:]


def data_card(run: Run) -> str | None:
    """The ``data_card.md`` of ``ayar prepare`` beside the run's training file, if there is one."""
    if not run.data:
        return None
    train = Path(run.data)
    train = train if train.is_absolute() else run.path.parent / train
    card = train.with_name("data_card.md")
    try:
        return card.read_text(encoding="utf-8") if card.is_file() else None
    except OSError:
        return None


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}`` (lists kept whole), for diffing recipes."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def recipe_diff(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """The recipe keys whose values differ between ``runs``: ``[(key, [value per run]), ...]``."""
    flat = [flatten(r.recipe) for r in runs]
    keys = sorted(set().union(*flat))
    return [(k, [f.get(k) for f in flat]) for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1]
