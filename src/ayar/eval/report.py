"""The run report: ``RUN_DIR/report.json`` (every number) and ``RUN_DIR/report.html`` (one self-contained page).

:func:`build_report` reads whatever the run folder holds, all of it optional:

- ``metrics.jsonl`` (training loss by step, validation loss), ``summary.json``, ``recipe.yaml``;
- ``eval/comparison.json`` (metrics base vs tuned with 95% intervals, confusion matrices),
  ``eval/examples.jsonl`` (generations side by side), ``eval/judge.json``,
  ``eval/preference.json``, ``eval/forgetting.json``, ``eval/memorisation.json``, ``eval/human.json``
  (``ayar eval human results``; its panel is shown only when it exists);
- any other ``eval/*.json``, shown as a key/value table (an "extra panel": the demo adds
  its style panel this way).

What is missing is shown as "not run"; a file that cannot be read is listed at
the top of the page (and in ``report.json`` under ``problems``) instead of
stopping the report. ``ayar report RUN_DIR`` rebuilds both files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.errors import AyarError

REPORT_VERSION = 1
KNOWN = ("comparison", "judge", "preference", "forgetting", "memorisation", "human")
MAX_EXAMPLES = 20  # rows of the examples table
RUN_FIELDS = ("method", "adapter", "steps", "final_loss", "eval_loss", "best_eval_loss", "trainable_parameters",
              "total_parameters", "stop_reason")


def collect(run_dir: str | Path, *, max_examples: int = MAX_EXAMPLES) -> dict[str, Any]:
    """Everything the report shows, as the dict written to ``report.json``."""
    from ayar.govern.manifest import utc_now

    run_dir = Path(run_dir)
    problems: list[str] = []
    eval_dir = run_dir / "eval"
    panels = {name: _read_json(eval_dir / f"{name}.json", problems) for name in KNOWN}
    extra = {}
    for path in sorted(eval_dir.glob("*.json")) if eval_dir.is_dir() else []:
        if path.stem not in KNOWN:
            value = _read_json(path, problems)
            if value is not None:
                extra[path.stem] = value
    examples = _read_jsonl(eval_dir / "examples.jsonl", problems)
    return {
        "ayar_report_version": REPORT_VERSION,
        "run_name": run_dir.resolve().name,
        "run_dir": str(run_dir.resolve()),
        "created_at": utc_now(),
        "run": _run_info(run_dir, problems),
        "training": _curves(run_dir / "metrics.jsonl", problems),
        **panels,
        "examples": examples[:max_examples] if examples is not None else None,
        "examples_total": len(examples) if examples is not None else None,
        "extra": extra,
        "problems": problems,
    }


def build_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``run_dir``; returns their paths.

    Raises:
        AyarError: ``run_dir`` is not a folder.
    """
    from ayar.eval.report_html import render
    from ayar.fsutil import atomic_write
    from ayar.govern.manifest import write_json_atomic

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AyarError(f"{run_dir}: not a folder; pass a run folder written by `ayar train`")
    report = collect(run_dir)
    page = render(report)  # before writing anything: a rendering error leaves the old files
    json_path = write_json_atomic(run_dir / "report.json", report)
    html_path = run_dir / "report.html"
    with atomic_write(html_path) as fh:
        fh.write(page)
    return json_path, html_path


# ----------------------------------------------------------------------------- reading


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(f"{path.name}: not valid JSON ({exc})")
        return None


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{path.name}:{number}: not valid JSON; line skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            problems.append(f"{path.name}:{number}: not a JSON object; line skipped")
    return rows


def _curves(path: Path, problems: list[str]) -> dict[str, list[list[float]]] | None:
    """``{"loss": [[step, loss], ...], "eval_loss": [[step, loss], ...]}`` from metrics.jsonl."""
    rows = _read_jsonl(path, problems)
    if rows is None:
        return None
    curves: dict[str, list[list[float]]] = {"loss": [], "eval_loss": []}
    for row in rows:
        for key in curves:
            if isinstance(row.get(key), (int, float)) and isinstance(row.get("step"), int):
                curves[key].append([row["step"], float(row[key])])
    return curves


def _run_info(run_dir: Path, problems: list[str]) -> dict[str, Any]:
    """The run's method, model and final figures (from recipe.yaml and summary.json)."""
    info: dict[str, Any] = {}
    recipe = run_dir / "recipe.yaml"
    if recipe.is_file():
        import yaml

        try:
            raw = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
            info["base model"] = (raw.get("model") or {}).get("path")
            info["training data"] = (raw.get("data") or {}).get("train")
        except (yaml.YAMLError, AttributeError) as exc:
            problems.append(f"recipe.yaml: not readable ({exc})")
    summary = _read_json(run_dir / "summary.json", problems)
    if isinstance(summary, dict):
        info.update({k.replace("_", " "): summary[k] for k in RUN_FIELDS if k in summary})
    return info
