"""Reading a request log back: per-arm feedback rates (``ayar ab report``) and new training data (``export-data``).

The log is what ``ayar serve --request-log`` writes (:mod:`ayar.serve.request_log`):
requests and feedback, each naming the model asked for (``model``, an A/B route or
a model) and the one that answered (``served_by``, the arm). Feedback is joined to
its request by response id.

Per arm the report gives the requests, the feedback received, the share of thumbs
up among thumbs with its Wilson 95% interval, the mean score with a bootstrap 95%
interval, and the corrections. Each arm is compared with the route's first arm
(the one with the most requests, the incumbent) by a two-proportion z-test on the
thumbs-up share; with more than two arms the level is Bonferroni-corrected.

Export: a corrected answer becomes an SFT conversation (the prompt, then the
correction as the assistant's reply); every thumbs up or down becomes a KTO row
(prompt, the served reply, label true/false). Prompts and replies are the log's,
already PII-redacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.eval.proportions import two_proportion_test, wilson_interval

ALPHA = 0.05


@dataclass
class Arm:
    """What one served model received on one route."""

    route: str
    name: str
    requests: int = 0
    up: int = 0
    down: int = 0
    scores: list[float] = field(default_factory=list)
    corrections: int = 0

    @property
    def thumbs(self) -> int:
        return self.up + self.down

    @property
    def feedback(self) -> int:
        return self.thumbs + len(self.scores) + self.corrections


def read_log(path: str | Path) -> tuple[dict[str, dict], list[dict]]:
    """(requests by id, feedback records in order) from a request log.

    Feedback for a request the log no longer holds (pruned) is kept: it names its arm.

    Raises:
        AyarError: the file is missing, or a line is not a JSON record (its line number named).
    """
    path = Path(path)
    if not path.is_file():
        raise AyarError(f"{path}: no such request log; `ayar serve --request-log {path}` writes one")
    requests: dict[str, dict] = {}
    feedback: list[dict] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AyarError(f"{path}:{number}: not a JSON line; is this a request log written by `ayar serve`?"
                            ) from None
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind not in ("request", "feedback") or not isinstance(record.get("id"), str):
            raise AyarError(f"{path}:{number}: not a request or feedback record (needs kind and id)")
        if kind == "request":
            requests[record["id"]] = record
        else:
            feedback.append(record)
    return requests, feedback


def _route_of(record: dict) -> str:
    return record.get("route") or record.get("model") or "?"


def tally(requests: dict[str, dict], feedback: Iterable[dict]) -> dict[str, list[Arm]]:
    """Arms per route (a model asked for by name is a route of one arm), most requests first."""
    arms: dict[tuple[str, str], Arm] = {}

    def arm(record: dict) -> Arm:
        key = (_route_of(record), record.get("served_by") or "?")
        return arms.setdefault(key, Arm(*key))

    for record in requests.values():
        arm(record).requests += 1
    for record in feedback:
        target = arm(requests.get(record["id"], record))  # the request's own arm when it is still logged
        if record.get("thumbs") == "up":
            target.up += 1
        elif record.get("thumbs") == "down":
            target.down += 1
        if isinstance(record.get("score"), (int, float)):
            target.scores.append(float(record["score"]))
        if record.get("correction"):
            target.corrections += 1
    routes: dict[str, list[Arm]] = {}
    for a in arms.values():
        routes.setdefault(a.route, []).append(a)
    return {r: sorted(group, key=lambda a: (-a.requests, a.name)) for r, group in sorted(routes.items())}


def arm_summary(arm: Arm, *, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """One arm's figures; the mean score's interval resamples its scores (``resamples`` times, from ``seed``)."""
    import numpy as np

    from ayar.eval.bootstrap import percentile_interval, resample_indices

    score_ci = None
    if len(arm.scores) >= 2:
        scores = np.asarray(arm.scores)
        means = scores[resample_indices(len(scores), resamples, seed)].mean(axis=1)
        score_ci = percentile_interval(means)
    interval = wilson_interval(arm.up, arm.thumbs)
    return {"arm": arm.name, "requests": arm.requests, "feedback": arm.feedback,
            "feedback_rate": arm.feedback / arm.requests if arm.requests else None,
            "up": arm.up, "down": arm.down, "up_rate": arm.up / arm.thumbs if arm.thumbs else None,
            "up_rate_ci95": list(interval) if interval else None,
            "scores": len(arm.scores), "mean_score": sum(arm.scores) / len(arm.scores) if arm.scores else None,
            "mean_score_ci95": list(score_ci) if score_ci else None, "corrections": arm.corrections}


def ab_report(path: str | Path, *, alpha: float = ALPHA) -> dict[str, Any]:
    """Every route's arms with their feedback figures, and each arm tested against the route's first.

    Raises:
        AyarError: the log cannot be read.
    """
    requests, feedback = read_log(path)
    out: dict[str, Any] = {"log": str(path), "requests": len(requests), "feedback": len(feedback), "routes": []}
    for route, arms in tally(requests, feedback).items():
        control = arms[0]
        level = alpha / max(1, len(arms) - 1)  # Bonferroni over the comparisons with the control
        comparisons = []
        for other in arms[1:]:
            test = two_proportion_test(control.up, control.thumbs, other.up, other.thumbs)
            comparisons.append({
                "arm": other.name, "against": control.name, "alpha": level,
                "up_rate_difference": test.difference if test else None,
                "z": test.z if test else None, "p_value": test.p_value if test else None,
                "significant": test.significant(level) if test else False,
                "note": None if test else "not testable: an arm has no thumbs, or every thumb is the same",
            })
        out["routes"].append({"route": route, "arms": [arm_summary(a) for a in arms], "comparisons": comparisons})
    return out


def render_report(report: dict[str, Any]) -> str:
    """The report as text, one table per route and a verdict line per comparison."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def interval(ci: list[float] | None, percent: bool = True) -> str:
        if not ci:
            return ""
        return f" [{pct(ci[0])}, {pct(ci[1])}]" if percent else f" [{ci[0]:.2f}, {ci[1]:.2f}]"

    lines = [f"{report['log']}: {report['requests']} requests, {report['feedback']} feedback records"]
    for route in report["routes"]:
        lines += ["", f"route {route['route']}",
                  f"  {'arm':<24} {'requests':>8} {'feedback':>8} {'thumbs up (95% CI)':>28} "
                  f"{'mean score (95% CI)':>24} {'corrections':>11}"]
        for a in route["arms"]:
            score = "-" if a["mean_score"] is None else f"{a['mean_score']:.2f}"
            thumbs = f"{a['up']}/{a['up'] + a['down']} {pct(a['up_rate'])}{interval(a['up_rate_ci95'])}"
            lines.append(f"  {a['arm']:<24} {a['requests']:>8} {a['feedback']:>8} {thumbs:>28} "
                         f"{score + interval(a['mean_score_ci95'], False):>24} {a['corrections']:>11}")
        for c in route["comparisons"]:
            if c["p_value"] is None:
                lines.append(f"  {c['arm']} vs {c['against']}: {c['note']}")
                continue
            verdict = "significant" if c["significant"] else "not significant"
            lines.append(f"  {c['arm']} vs {c['against']}: thumbs-up difference {100 * c['up_rate_difference']:+.1f} "
                         f"points, z = {c['z']:.2f}, p = {c['p_value']:.4f}: {verdict} at alpha {c['alpha']:.3g}")
    return "\n".join(lines)


def export_data(path: str | Path, out: str | Path, *, route: str | None = None) -> dict[str, Any]:
    """Write ``OUT/sft.jsonl`` (corrections) and ``OUT/kto.jsonl`` (thumbs) from a request log.

    Returns:
        ``{"sft": n, "kto": n, "skipped": n, "files": [...]}``; skipped: feedback whose request the log no
        longer holds (its prompt is gone).

    Raises:
        AyarError: the log cannot be read, or nothing in it (for ``route``) can be exported.
    """
    from ayar.fsutil import atomic_write

    requests, feedback = read_log(path)
    sft, kto, skipped = [], [], 0
    for record in feedback:
        request = requests.get(record["id"])
        if route is not None and _route_of(request or record) != route:
            continue
        if request is None or not request.get("prompt"):
            skipped += 1
            continue
        prompt = request["prompt"]
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if record.get("correction"):
            sft.append({"messages": [*messages, {"role": "assistant", "content": record["correction"]}]})
        if record.get("thumbs") in ("up", "down") and request.get("reply"):
            kto.append({"prompt": messages, "completion": [{"role": "assistant", "content": request["reply"]}],
                        "label": record["thumbs"] == "up"})
    if not sft and not kto:
        which = f" for route {route}" if route else ""
        raise AyarError(f"{path}: no corrections or thumbs{which} with their request in the log; nothing to export")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rows in (("sft.jsonl", sft), ("kto.jsonl", kto)):
        if rows:
            with atomic_write(out / name) as fh:
                fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            files.append(str(out / name))
    return {"sft": len(sft), "kto": len(kto), "skipped": skipped, "files": files}
