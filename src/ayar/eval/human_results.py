"""Results of a human evaluation: win/tie/loss per rater and pooled, inter-rater and judge agreement.

See :mod:`ayar.eval.human` for the set and the ratings. Outcomes are for system X (the
run's tuned model): ``win``, ``loss``, ``tie_good`` (both good), ``tie_bad`` (both bad);
"tie" in the rates is both kinds together.
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.eval.human import OUTCOMES, human_dir, latest_ratings, unblind
from ayar.eval.proportions import cohen_kappa, fleiss_kappa, wilson_interval

RESAMPLES = 2000
JUDGE_OUTCOME = {"win": "win", "loss": "loss", "tie_good": "tie", "tie_bad": "tie"}


def _rates(outcomes: list[str]) -> dict[str, Any]:
    n = len(outcomes)
    counts = {o: outcomes.count(o) for o in OUTCOMES}
    ties = counts["tie_good"] + counts["tie_bad"]
    out: dict[str, Any] = {"n": n, **counts, "tie": ties}
    for name, k in (("win", counts["win"]), ("tie", ties), ("loss", counts["loss"])):
        out[f"{name}_rate"] = k / n if n else None
        interval = wilson_interval(k, n)
        out[f"{name}_ci95"] = list(interval) if interval else None
    return out


def _pooled(by_item: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """Rates over every rating; intervals from resampling items (an item's ratings move together)."""
    import numpy as np

    from ayar.eval.bootstrap import percentile_interval, resample_indices

    items = sorted(by_item)
    out = _rates([o for item in items for o in by_item[item]])
    if not items:
        return out
    # (items, 3) counts of win, tie, loss per item; a resample sums the rows it draws.
    table = np.array([[sum(o == "win" for o in by_item[i]), sum(o.startswith("tie") for o in by_item[i]),
                       sum(o == "loss" for o in by_item[i])] for i in items], dtype=np.float64)
    sums = table[resample_indices(len(items), RESAMPLES, seed)].sum(axis=1)  # (resamples, 3)
    totals = sums.sum(axis=1)
    for column, name in enumerate(("win", "tie", "loss")):
        interval = percentile_interval(sums[:, column] / totals)
        out[f"{name}_ci95"] = list(interval) if interval else None
    out["interval"] = "item bootstrap, 95% percentile"
    return out


def _judge_pairs(run_dir: Path) -> dict[str, str] | None:
    """Example id -> the LLM judge's outcome for the tuned model (win/tie/loss), when a judge ran."""
    path = run_dir / "eval" / "judge_pairs.jsonl"
    if not path.is_file():
        return None
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            pair = json.loads(line)
            if pair.get("outcome") in ("win", "tie", "loss"):
                out[str(pair["id"])] = pair["outcome"]
    return out


def results(run_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Everything ``human.json`` holds.

    Raises:
        AyarError: no set was exported, or nobody has rated yet.
    """
    run_dir = Path(run_dir)
    key_path = human_dir(run_dir) / "key.json"
    if not key_path.is_file():
        raise AyarError(f"{run_dir}: no human-evaluation set; run `ayar eval human export {run_dir}` first")
    key = json.loads(key_path.read_text(encoding="utf-8"))
    ratings = latest_ratings(run_dir)
    if not ratings:
        raise AyarError(f"{run_dir}: no ratings yet; rate on `ayar ui`'s rating page or import a CSV with "
                        f"`ayar eval human import {run_dir} FILE --rater NAME`")
    outcome: dict[tuple[str, str], str] = {}
    for (rater, item), record in ratings.items():
        side = "a" if key["items"][item]["a"] == "x" else "b"  # where system X was shown
        outcome[(rater, item)] = unblind(record["verdict"], side)
    raters = sorted({r for r, _ in outcome})
    by_item: dict[str, list[str]] = {}
    for (_, item), o in sorted(outcome.items()):
        by_item.setdefault(item, []).append(o)
    out: dict[str, Any] = {
        "systems": key["systems"], "items": len(key["items"]), "rated_items": len(by_item),
        "ratings": len(outcome),
        "per_rater": {r: _rates([o for (rr, _), o in sorted(outcome.items()) if rr == r]) for r in raters},
        "pooled": _pooled(by_item, seed),
        "agreement": _agreement(outcome, raters),
        "judge_agreement": None,
    }
    judge = _judge_pairs(run_dir) if key.get("against") is None else None
    if judge:
        out["judge_agreement"] = _with_judge(outcome, key, judge)
    return out


def _agreement(outcome: dict[tuple[str, str], str], raters: list[str]) -> dict[str, Any]:
    """Cohen's kappa per pair of raters (items both rated) and Fleiss' kappa (items every rater rated)."""
    cohen = {}
    for first, second in combinations(raters, 2):
        shared = sorted({i for r, i in outcome if r == first} & {i for r, i in outcome if r == second})
        labels = ([outcome[(first, i)] for i in shared], [outcome[(second, i)] for i in shared])
        cohen[f"{first}~{second}"] = {"items": len(shared), "kappa": cohen_kappa(*labels) if shared else None,
                                      "percent_agreement": (sum(a == b for a, b in zip(*labels, strict=True))
                                                            / len(shared)) if shared else None}
    fleiss = None
    if len(raters) >= 2:
        everyone = sorted(set.intersection(*({i for r, i in outcome if r == rater} for rater in raters)))
        fleiss = {"raters": len(raters), "items": len(everyone),
                  "kappa": fleiss_kappa([[outcome[(r, i)] for r in raters] for i in everyone]) if everyone else None}
    return {"cohen": cohen, "fleiss": fleiss, "categories": list(OUTCOMES)}


def _with_judge(outcome: dict[tuple[str, str], str], key: dict, judge: dict[str, str]) -> dict[str, Any]:
    """Each human rating against the judge's verdict on the same pair (win/tie/loss; both kinds of tie alike)."""
    human, machine = [], []
    for (_, item), o in sorted(outcome.items()):
        example = key["items"][item]["example_id"]
        if example in judge:
            human.append(JUDGE_OUTCOME[o])
            machine.append(judge[example])
    if not human:
        return {"ratings": 0, "percent_agreement": None, "kappa": None}
    return {"ratings": len(human), "percent_agreement": sum(a == b for a, b in zip(human, machine, strict=True))
            / len(human), "kappa": cohen_kappa(human, machine)}


def write_results(run_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Write ``RUN/eval/human.json`` (the report shows it) and record it in the run's audit ledger."""
    from ayar.govern.ledger import ref
    from ayar.govern.manifest import write_json_atomic
    from ayar.govern.record import ledger_for_run

    run_dir = Path(run_dir)
    summary = results(run_dir, seed=seed)
    path = write_json_atomic(run_dir / "eval" / "human.json", summary)
    folder = human_dir(run_dir)
    pooled = summary["pooled"]
    ledger_for_run(run_dir).append("human_eval", {
        "run_dir": str(run_dir.resolve()), "systems": summary["systems"], "raters": len(summary["per_rater"]),
        "ratings": summary["ratings"], "win_rate": pooled["win_rate"], "tie_rate": pooled["tie_rate"],
        "loss_rate": pooled["loss_rate"], "fleiss_kappa": (summary["agreement"]["fleiss"] or {}).get("kappa"),
    }, inputs={"key.json": ref(folder / "key.json"), "ratings.jsonl": ref(folder / "ratings.jsonl")},
        outputs={"human.json": ref(path)})
    return summary


def render_results(summary: dict[str, Any]) -> str:
    """The results as text: a line per rater, the pooled line, agreement."""

    def line(name: str, r: dict[str, Any]) -> str:
        def part(k: str) -> str:
            ci = r.get(f"{k}_ci95")
            rate = r.get(f"{k}_rate")
            text = "-" if rate is None else f"{100 * rate:.1f}%"
            return f"{k} {r[k]} ({text}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "") + ")"

        return f"  {name:<16} n={r['n']:<4} {part('win')}  {part('tie')}  {part('loss')}  both bad {r['tie_bad']}"

    s = summary["systems"]
    lines = [f"{s['x']} vs {s['y']}: {summary['ratings']} ratings of {summary['rated_items']}/{summary['items']} items"]
    lines += [line(name, r) for name, r in summary["per_rater"].items()]
    lines.append(line("pooled", summary["pooled"]))
    for pair, a in summary["agreement"]["cohen"].items():
        kappa = "-" if a["kappa"] is None else f"{a['kappa']:.3f}"
        lines.append(f"  Cohen's kappa {pair}: {kappa} on {a['items']} items")
    fleiss = summary["agreement"]["fleiss"]
    if fleiss and fleiss["kappa"] is not None:
        lines.append(f"  Fleiss' kappa ({fleiss['raters']} raters): {fleiss['kappa']:.3f} on {fleiss['items']} items")
    judge = summary.get("judge_agreement")
    if judge and judge["ratings"]:
        kappa = "-" if judge["kappa"] is None else f"{judge['kappa']:.3f}"
        lines.append(f"  agreement with the LLM judge: {100 * judge['percent_agreement']:.1f}% of "
                     f"{judge['ratings']} ratings, kappa {kappa}")
    return "\n".join(lines)
