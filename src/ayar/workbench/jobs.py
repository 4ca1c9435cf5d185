"""Background jobs of the workbench: ``ayar train`` / ``eval`` / ``export`` as child processes.

A job is an ``ayar`` command run with the workbench's own Python, its output in
``WORKSPACE/.ayar-ui/jobs/<id>.log``. Cancelling sends SIGINT: ``ayar train``
finishes the current step, writes a checkpoint and exits, and the next ``ayar
train`` of the same recipe resumes from it.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ayar.errors import AyarError

KINDS = ("train", "eval", "export")
LOG_TAIL = 20_000  # characters of a job's log shown


@dataclass
class Job:
    id: str
    kind: str
    target: str  # the recipe (train) or run folder (eval, export)
    args: list[str]
    log: Path
    process: subprocess.Popen
    started: float
    cancelled: bool = False

    @property
    def status(self) -> str:
        code = self.process.poll()
        if code is None:
            return "cancelling" if self.cancelled else "running"
        if self.cancelled:
            return "cancelled"
        return "finished" if code == 0 else f"failed (exit {code})"

    def tail(self) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-LOG_TAIL:]

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "target": self.target, "status": self.status,
                "started": self.started, "command": " ".join(["ayar", *self.args])}


class Jobs:
    """The jobs one workbench started (kept in memory; their logs stay on disk)."""

    def __init__(self, workspace: Path):
        self.folder = workspace / ".ayar-ui" / "jobs"
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, kind: str, target: Path) -> Job:
        """Start ``ayar KIND TARGET`` in the background.

        Raises:
            AyarError: an unknown kind, or a job on the same target still running.
        """
        if kind not in KINDS:
            raise AyarError(f"job {kind!r}: choose one of {', '.join(KINDS)}")
        args = {"train": ["train", str(target)], "eval": ["eval", str(target)],
                "export": ["export", str(target), "--format", "adapter", "--overwrite"]}[kind]
        with self._lock:
            if any(j.target == str(target) and j.process.poll() is None for j in self._jobs.values()):
                raise AyarError(f"{target}: a job on it is still running; cancel it first")
            job_id = f"{next(self._ids)}-{kind}"
            self.folder.mkdir(parents=True, exist_ok=True)
            log = self.folder / f"{job_id}.log"
            with open(log, "w", encoding="utf-8") as out:
                process = subprocess.Popen([sys.executable, "-m", "ayar.cli", *args], stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=target.parent,
                                           start_new_session=True)  # Ctrl-C on the workbench does not reach it
            job = Job(job_id, kind, str(target), args, log, process, time.time())
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            raise AyarError(f"no job {job_id!r}")
        return self._jobs[job_id]

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.started, reverse=True)

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop (SIGINT: training checkpoints first)."""
        job = self.get(job_id)
        if job.process.poll() is None:
            job.cancelled = True
            job.process.send_signal(signal.SIGINT)
        return job

    def close(self, timeout: float = 30.0) -> None:
        """Cancel what still runs and wait for it (then kill what did not stop)."""
        for job in self._jobs.values():
            if job.process.poll() is None:
                self.cancel(job.id)
        for job in self._jobs.values():
            try:
                job.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                job.process.kill()
