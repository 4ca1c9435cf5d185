"""The report's figures, drawn with matplotlib and returned as base64 PNG text for inline ``<img>`` tags.

Each function takes the same dict that ``report.json`` holds for its panel and
returns None when there is nothing to draw. Figures are built with the
object-oriented API (:class:`matplotlib.figure.Figure`, Agg canvas): no pyplot
state, no display needed. PNG metadata is left out so that the same inputs give
the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

BASE, TUNED, CONTROL = "#8c8c8c", "#1f6fb2", "#c9c9c9"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def loss_curves(training: dict[str, Any] | None) -> str | None:
    """Training loss by step, with the validation loss where it was measured."""
    if not training or not (training["loss"] or training["eval_loss"]):
        return None
    fig = _figure(7, 3.2)
    ax = fig.add_subplot()
    if training["loss"]:
        steps, values = zip(*training["loss"], strict=True)
        ax.plot(steps, values, color=TUNED, linewidth=1.2, label="training loss")
    if training["eval_loss"]:
        steps, values = zip(*training["eval_loss"], strict=True)
        ax.plot(steps, values, "o-", color="#d1495b", markersize=4, linewidth=1, label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return _png(fig)


def metric_bars(metrics: list[dict[str, Any]]) -> str | None:
    """One small panel per metric: base and tuned bars; the tuned bar's error bar is base + the 95% CI of
    the paired difference, so it overlaps the base bar's height exactly when the difference is not
    significant."""
    rows = [m for m in metrics if _number(m.get("base")) or _number(m.get("tuned"))]
    if not rows:
        return None
    cols = min(4, len(rows))
    grid = math.ceil(len(rows) / cols)
    fig = _figure(2.4 * cols, 2.4 * grid)
    for k, m in enumerate(rows):
        ax = fig.add_subplot(grid, cols, k + 1)
        base, tuned = _value(m.get("base")), _value(m.get("tuned"))
        ax.bar([0, 1], [base, tuned], color=[BASE, TUNED], width=0.6)
        ci = m.get("ci95")
        if ci and _number(m.get("base")) and _number(m.get("tuned")):
            low, high = base + ci[0], base + ci[1]
            ax.errorbar([1], [tuned], yerr=[[max(tuned - low, 0)], [max(high - tuned, 0)]], color="black",
                        capsize=4, linewidth=1)
        ax.axhline(base, color=BASE, linewidth=0.8, linestyle=":")
        ax.set_xticks([0, 1], ["base", "tuned"])
        arrow = "↑" if m.get("higher_is_better", True) else "↓"
        ax.set_title(f"{m['name']} {arrow}", fontsize=9)
        ax.tick_params(labelsize=8)
    return _png(fig)


def judge_shares(judge: dict[str, Any]) -> str | None:
    """Win, tie and loss shares of the tuned model with their 95% intervals."""
    shares = [judge.get(f"{k}_rate") for k in ("win", "tie", "loss")]
    if not all(_number(s) for s in shares):
        decided = sum(judge.get(k) or 0 for k in ("win", "tie", "loss"))
        if not decided:
            return None
        shares = [(judge.get(k) or 0) / decided for k in ("win", "tie", "loss")]
    fig = _figure(4.5, 2.6)
    ax = fig.add_subplot()
    ax.bar([0, 1, 2], shares, color=["#2a9d52", BASE, "#d1495b"], width=0.6)
    intervals = (judge.get("ci95") or {})
    for x, (key, share) in enumerate(zip(("win", "tie", "loss"), shares, strict=True)):
        ci = intervals.get(key)
        if ci:
            ax.errorbar([x], [share], yerr=[[max(share - ci[0], 0)], [max(ci[1] - share, 0)]], color="black",
                        capsize=4, linewidth=1)
    ax.set_xticks([0, 1, 2], ["tuned wins", "tie", "base wins"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of pairs")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def perplexities(forgetting: dict[str, Any]) -> str | None:
    """General-text perplexity of base and tuned."""
    if not (_number(forgetting.get("base_ppl")) and _number(forgetting.get("tuned_ppl"))):
        return None
    fig = _figure(3.2, 2.4)
    ax = fig.add_subplot()
    colour = "#d1495b" if forgetting.get("flag") else TUNED
    ax.bar([0, 1], [forgetting["base_ppl"], forgetting["tuned_ppl"]], color=[BASE, colour], width=0.6)
    ax.set_xticks([0, 1], ["base", "tuned"])
    ax.set_ylabel("perplexity")
    return _png(fig)


def exposures(canaries: dict[str, Any] | None) -> str | None:
    """Each canary's exposure (blue) and each control's (grey), against chance, resolution and ceiling."""
    if not canaries or not canaries.get("exposures"):
        return None
    planted, controls = canaries["exposures"], canaries.get("control_exposures") or []
    fig = _figure(max(5.5, 0.45 * (len(planted) + len(controls)) + 3), 3.0)
    ax = fig.add_subplot()
    xs = range(len(planted) + len(controls))
    ax.bar(xs, planted + controls, color=[TUNED] * len(planted) + [CONTROL] * len(controls), width=0.7)
    ax.set_xticks(list(xs), [f"c{i}" for i in range(len(planted))] + [f"ctl{i}" for i in range(len(controls))],
                  fontsize=8)
    ax.axhline(canaries["chance_level"], color="black", linestyle=":", linewidth=1, label="chance")
    if canaries.get("resolution_log2"):
        ax.axhline(canaries["resolution_log2"], color="#e9a23b", linestyle="--", linewidth=1,
                   label="log2 candidates sampled")
    ax.axhline(canaries["candidate_space_log2"], color="#d1495b", linewidth=1, label="log2 |R| (maximum)")
    ax.set_ylabel("exposure (bits)")
    ax.set_ylim(0, canaries["candidate_space_log2"] * 1.08)
    ax.legend(frameon=False, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return _png(fig)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _value(value: Any) -> float:
    return float(value) if _number(value) else 0.0
