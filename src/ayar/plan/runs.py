"""Finished runs as the planner sees them: their recipe and measurements, the device they ran on, the
FLOPs their steps did. Shared by the report, the calibration and the measurement in ``train``."""

from __future__ import annotations

import json
from pathlib import Path

from ayar.errors import AyarError
from ayar.plan.catalogue import Device, load_calibrations, load_catalogue, pick_devices
from ayar.plan.data import profile_examples
from ayar.plan.estimate import estimate_device, plan_recipe


def this_device() -> Device:
    return pick_devices(load_catalogue(), None)[0]


def run_flops_of(recipe, examples, steps: int, device) -> tuple[float, float, float]:
    """(hardware FLOPs, useful FLOPs, device peak FLOP/s) of a finished run's ``steps`` steps."""
    from ayar.plan.compute import useful_flops
    from ayar.plan.estimate import run_flops, work

    p = plan_recipe(recipe, profile=profile_examples(examples))
    p.steps = steps
    dev = this_device()
    est = estimate_device(p, dev)
    stream = p.stream(recipe.train.micro_batch_size, recipe.train.gradient_accumulation_steps)
    w = work(p, est.setup, p.trainable)
    targets = sum(s[2] for s in stream.shapes) * (stream.micro_batches / max(len(stream.shapes), 1))
    return run_flops(p, est.setup, stream, p.trainable), useful_flops(p.inventory, stream.real_tokens, targets, w), \
        dev.peak_flops


def read_run(run_dir: Path) -> tuple[object, dict]:
    """A finished run's resolved recipe and summary.

    Raises:
        AyarError: the folder holds no finished run.
    """
    from ayar.recipe import load_recipe

    summary_path, recipe_path = run_dir / "summary.json", run_dir / "recipe.yaml"
    if not summary_path.is_file() or not recipe_path.is_file():
        raise AyarError(f"{run_dir}: not a finished run (needs summary.json and recipe.yaml)")
    return load_recipe(recipe_path, []), json.loads(summary_path.read_text(encoding="utf-8"))


def device_for(measured: dict) -> Device:
    """The catalogue device a run was measured on (a CPU with the run's thread count)."""
    from ayar.plan.catalogue import cpu_device

    catalogue = load_catalogue()
    if measured.get("device", "cpu") == "cpu":
        return cpu_device(load_calibrations()["cpu"], measured.get("threads"))
    for name, d in catalogue.items():
        if name.split("-")[0].lower() in measured["device"].lower():
            return d
    return catalogue["H100-80GB"]


def measured_seconds(m: dict) -> float | None:
    """A run's time in the planner's terms: on a CPU compute time (CPU seconds / threads, what the run takes on an
    idle machine, robust to other processes sharing the cores); on a GPU wall time. Per-step medians x steps."""
    if m.get("device", "cpu") == "cpu" and m.get("step_cpu_seconds"):
        return m["step_cpu_seconds"] * m["steps"] / max(m.get("threads", 1), 1)
    return m["step_seconds"] * m["steps"] if m.get("step_seconds") else None
