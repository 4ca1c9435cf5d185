"""Console output: one rich console on stderr for progress and messages."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextmanager
def step_progress(description: str):
    """A progress bar for training steps; yields ``update(step, total, record)``.

    Off a terminal (CI, logs) it prints a line every tenth of the run instead.
    """
    if not console.is_terminal:

        def update(step: int, total: int, record: dict) -> None:
            if step % max(1, total // 10) == 0 or step == total:
                console.print(f"{description} {step}/{total} {_fmt(record)}")

        yield update
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=None, stats="")

        def update(step: int, total: int, record: dict) -> None:
            bar.update(task, completed=step, total=total, stats=_fmt(record))

        yield update


def _fmt(record: dict) -> str:
    if "loss" not in record:  # a pass that is not training (e.g. the teacher's precompute pass)
        return ""
    parts = [f"loss {record['loss']:.4f}", f"lr {record['lr']:.2e}", f"{record['tokens_per_s']:.0f} tok/s"]
    if "eval_loss" in record:
        parts.append(f"eval {record['eval_loss']:.4f}")
    return "  ".join(parts)
