"""``ayar plan --calibrate RUN_DIR...``: fit the per-device-class constants from measured runs.

For each run the estimate is redone with neutral constants, splitting the
prediction into parts the constants scale:

- memory: ``measured = fixed + k x activations + c``: ``k`` is ``activation_factor``
  (activations and loss head), ``c`` the overhead; weights, adapter, gradients and
  optimizer states are exact and not fitted;
- time: ``measured = FLOPs / peak x (1 / mfu) + micro_batches x layers x s_step
  + steps x trainable x s_opt``.

Both are least-squares fits with non-negative unknowns (all subsets of unknowns
tried, the best feasible one kept; two or three unknowns). The time range is the
fit's MFU widened by its largest relative residual.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from ayar.errors import AyarError
from ayar.fsutil import atomic_write
from ayar.plan.catalogue import GIB, Calibration, plan_home
from ayar.plan.estimate import estimate_device, layer_passes, plan_recipe
from ayar.plan.runs import device_for, measured_seconds, read_run

NEUTRAL = Calibration(mfu=(1.0, 1.0), step_overhead_s=0.0, overhead_bytes=0.0, activation_factor=1.0,
                      source="neutral", optimizer_s_per_param=0.0, peak_flops=None)


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares ``a x ~ b`` with ``x >= 0``, by trying every subset of columns (few unknowns)."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(b**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x_sub, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x_sub < 0):
                continue
            x = np.zeros(a.shape[1])
            x[list(cols)] = x_sub
            err = float(np.sum((a @ x - b) ** 2))
            if err < best_err:
                best, best_err = x, err
    return best


def run_parts(run_dir: Path) -> dict:
    """A run's measured values and the parts of its prediction the constants scale."""
    recipe, summary = read_run(run_dir)
    m = summary.get("measured") or {}
    if not m.get("peak_memory_bytes") or not measured_seconds(m):
        raise AyarError(f"{run_dir}/summary.json: no measurements to calibrate from (rerun it with this ayar)")
    p = plan_recipe(recipe)
    p.steps = m["steps"]
    device = device_for(m)
    est = estimate_device(p, device, calibrations={device.device_class: NEUTRAL, "cuda": NEUTRAL, "cpu": NEUTRAL})
    t = est.terms
    act = t["activations"] + t["loss_head"] + (t["reference"] if est.setup.reference != "copy" else 0.0) + \
        t.get("teacher_forward", 0.0)
    return {"class": device.device_class, "peak": device.peak_flops, "measured_bytes": m["peak_memory_bytes"],
            "fixed_bytes": sum(t.values()) - act, "activation_bytes": act,
            "measured_s": measured_seconds(m), "flops": est.flops,
            "peak_per_core": device.peak_flops / max(m.get("threads", 1), 1),
            "layer_batches": layer_passes(p, m["micro_batches"]),
            "param_steps": p.trainable * m["steps"], "source": str(run_dir)}


def fit(parts: list[dict], peak_flops: float) -> dict:
    """Constants for one device class from its runs' parts."""
    if len(parts) < 2:
        raise AyarError("--calibrate needs at least two finished runs per device class (different sizes)")
    mem_a = np.array([[q["activation_bytes"], 1.0] for q in parts])
    mem_b = np.array([q["measured_bytes"] - q["fixed_bytes"] for q in parts])
    k, c = nnls(mem_a, mem_b)
    time_a = np.array([[q["flops"] / peak_flops, q["layer_batches"], q["param_steps"]] for q in parts])
    time_b = np.array([q["measured_s"] for q in parts])
    inv_mfu, s_step, s_opt = nnls(time_a, time_b)
    mfu = 1 / inv_mfu if inv_mfu > 0 else 1.0
    predicted = time_a @ np.array([inv_mfu, s_step, s_opt])
    spread = float(np.max(np.abs(predicted / time_b - 1))) if len(parts) else 0.0
    spread = min(max(spread, 0.1), 0.6)
    return {"mfu": [round(mfu / (1 + spread), 4), round(min(1.0, mfu / (1 - spread)), 4)], "step_overhead_s": float(s_step),
            "optimizer_s_per_param": float(s_opt), "overhead_gib": float(c) / GIB, "activation_factor": float(k),
            "runs": len(parts)}


def calibrate(run_dirs: list[Path], *, source: str | None = None, out: Path | None = None) -> dict:
    """Fit each device class seen in ``run_dirs`` and store the result (merged with what was stored).

    Returns:
        The stored document: ``{"classes": {name: constants}}``.

    Raises:
        AyarError: a folder is not a measured run, or a class has fewer than two runs.
    """
    by_class: dict[str, list[dict]] = {}
    for d in run_dirs:
        q = run_parts(Path(d))
        by_class.setdefault(q["class"], []).append(q)
    path = out or plan_home() / "calibration.json"
    doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"classes": {}}
    for name, parts in by_class.items():
        peak = parts[0]["peak"]
        entry = fit(parts, peak)
        entry["source"] = source or f"ayar plan --calibrate on {len(parts)} runs"
        if name == "cpu":
            entry["peak_tflops_bf16_per_core"] = parts[0]["peak_per_core"] / 1e12
        doc["classes"][name] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as fh:
        fh.write(json.dumps(doc, indent=2))
    return doc
