"""What a training run actually used, for its ``summary.json``, and the pre-flight check of ``ayar train``.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` and ``max_memory_reserved``;
on CPU the process's resident-set high-water mark (``VmHWM``), reset at the
start of the run through ``/proc/self/clear_refs`` so an earlier run in the same
process does not count (where that is not allowed: ``ru_maxrss``, the
process's lifetime peak).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ayar.errors import AyarError

GIB = 2**30


@dataclass
class PeakMemory:
    """Reset the peak counters at ``start``; read them at ``read``."""

    device_type: str
    reset_ok: bool = False

    def start(self) -> PeakMemory:
        if self.device_type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.reset_ok = True
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset_ok = True
        except OSError:
            self.reset_ok = False
        return self

    def read(self) -> dict[str, float | str]:
        if self.device_type == "cuda":
            import torch

            return {"peak_memory_bytes": torch.cuda.max_memory_allocated(),
                    "cuda_max_reserved_bytes": torch.cuda.max_memory_reserved(), "memory_source": "cuda allocated"}
        hwm = _vm_hwm() if self.reset_ok else None
        if hwm is None:
            return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "memory_source": "ru_maxrss (process lifetime)"}
        return {"peak_memory_bytes": hwm, "memory_source": "VmHWM since run start"}


def _vm_hwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def step_seconds(history: list[dict]) -> float | None:
    """Median seconds of a training step, from the loop's ``elapsed_s`` (first step and steps after an
    evaluation or checkpoint left out: they carry one-off costs)."""
    times = [r["elapsed_s"] for r in history]
    durations = [b - a for a, b, prev in zip(times, times[1:], history, strict=False)
                 if "eval_loss" not in prev]
    return statistics.median(durations) if durations else (times[0] if times else None)


class StepClock:
    """Wraps the loop's progress callback to note the process's CPU time after every step.

    CPU time (all threads) is what a step costs whoever else shares the cores; wall time is not.
    """

    def __init__(self, inner=None):
        self.inner, self.cpu = inner, [time.process_time()]

    def __call__(self, step, total, record) -> None:
        self.cpu.append(time.process_time())
        if self.inner is not None:
            self.inner(step, total, record)

    def median_step(self) -> float | None:
        """Median CPU seconds of a step, the first (warm-up) left out when there are others."""
        steps = [b - a for a, b in zip(self.cpu, self.cpu[1:], strict=False)]
        steps = steps[1:] if len(steps) > 1 else steps
        return statistics.median(steps) if steps else None


def measured(recipe, examples, result, peak: dict, device, clock: StepClock | None = None) -> dict:
    """The measured record of a run: peak memory, tokens/s, step time (wall and CPU), FLOPs and achieved MFU
    (useful FLOPs over the planner's time: compute time on a CPU, wall time on a GPU)."""
    import torch

    out: dict = {**peak, "device": _device_name(device), "threads": torch.get_num_threads(),
                 "load_average": round(os.getloadavg()[0], 2), "steps": result.steps,
                 "micro_batches": result.steps * recipe.train.gradient_accumulation_steps,
                 "tokens_per_s": result.tokens / result.seconds if result.seconds else None,
                 "step_seconds": step_seconds(result.history),
                 "step_cpu_seconds": clock.median_step() if clock else None}
    try:
        from ayar.plan.report import run_flops_of
        flops, useful, peak_flops = run_flops_of(recipe, examples, result.steps, device)
    except AyarError:  # a hub id: no local headers to count FLOPs from
        return out
    from ayar.plan.report import measured_seconds

    seconds = measured_seconds(out) or 0.0
    out.update({"flops": flops, "useful_flops": useful, "peak_flops": peak_flops,
                "mfu": useful / (seconds * peak_flops) if seconds else None})
    return out


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def available_memory(device) -> int:
    """Bytes this process could hold on ``device``: free GPU memory, or available RAM plus what it holds now."""
    if device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_allocated(device)
    import psutil

    return psutil.virtual_memory().available + psutil.Process().memory_info().rss
