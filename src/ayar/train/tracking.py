"""Experiment tracking: the recipe's ``train.tracking`` (mlflow, tensorboard, wandb or none).

Each backend is one of accelerate's tracker classes (``accelerate.tracking``),
driven directly: ``start()``, ``store_init_configuration(params)``,
``log(values, step)``, ``finish()`` — the calls ``Accelerator.init_trackers``,
``Accelerator.log`` and ``Accelerator.end_training`` make. We do not go through
``Accelerator(log_with=...)`` because ``log_with`` is fixed when the Accelerator
is built (before the recipe's choice matters to run.py), and ``end_training``
also tears down the distributed process group; driving the tracker object keeps
the Accelerator untouched, so one process can train twice in a row with
different trackers. ``Tracker.backend`` is the object ``accelerator.get_tracker``
would return.

MLflow writes to a local SQLite store inside the run folder — no server, no
network (its usage telemetry is switched off too) — with artifacts beside it::

    <output_dir>/mlflow.db      runs, params, metrics
    <output_dir>/mlruns/        artifacts (resolved recipe, run manifest)

See the run with (the UI needs the full package: ``pip install mlflow``)::

    mlflow ui --backend-store-uri sqlite:///<output_dir>/mlflow.db

TensorBoard writes event files under ``<output_dir>/tensorboard/<run_name>``
(``tensorboard --logdir <output_dir>/tensorboard``); wandb keeps its local files
under ``<output_dir>/wandb`` and syncs to the account wandb is logged into.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ayar.errors import AyarError

TRACKERS = ("none", "mlflow", "tensorboard", "wandb")
EXPERIMENT = "ayar"  # MLflow experiment / wandb project name

# kind -> (modules that must import, the pip command that installs them)
_REQUIREMENTS = {
    "mlflow": (("mlflow", "sqlalchemy", "alembic"), "pip install mlflow-skinny sqlalchemy alembic"),
    "tensorboard": (("tensorboard",), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb"),
}


class Tracker:
    """A started run in one tracking backend (an accelerate ``GeneralTracker``), on the main process.

    Use as a context manager so a crash still closes the run (MLflow marks it FAILED)::

        with start_tracking(...) as tracker:
            tracker.log({"loss": 1.2}, step=1)
    """

    def __init__(self, kind: str, backend: Any = None, view_command: str | None = None):
        self.kind = kind
        self.backend = backend
        self.view_command = view_command  # shell command that shows the run, for the run summary
        self._open = backend is not None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log the numeric values of ``metrics`` at ``step`` (a ``"step"`` key and non-numbers are skipped)."""
        values = {k: v for k, v in metrics.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._open and values:
            self.backend.log(values, step=step)

    def log_artifact(self, path: str | Path) -> None:
        """Attach a file to the run. Here: nothing, the file already sits in the run folder (tensorboard)."""

    def finish(self, *, failed: bool = False) -> None:
        """Close the run (idempotent). ``failed``: the training raised."""
        if self._open:
            self._open = False
            self._close(failed)

    def _close(self, failed: bool) -> None:
        self.backend.finish()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(failed=exc_type is not None)


class NullTracker(Tracker):
    """``train.tracking: none``, and every process but the main one: records nothing."""

    def __init__(self):
        super().__init__("none")


class _MlflowRun(Tracker):
    def __init__(self, backend: Any, view_command: str, previous_uri: str | None):
        super().__init__("mlflow", backend, view_command)
        self._previous_uri = previous_uri

    def log_artifact(self, path: str | Path) -> None:
        """Copy the file into the run's artifacts (``<output_dir>/mlruns/...``)."""
        if self._open:
            self.backend.log_artifact(str(path))

    def _close(self, failed: bool) -> None:
        import mlflow

        try:  # accelerate's finish() always ends the run as FINISHED; end_run records a failure
            if failed:
                mlflow.end_run(status="FAILED")
            else:
                self.backend.finish()
        finally:
            mlflow.set_tracking_uri(self._previous_uri)


class _WandbRun(Tracker):
    def log_artifact(self, path: str | Path) -> None:
        """Upload the file with the run (accelerate's WandBTracker has no artifact call)."""
        if self._open:
            path = Path(path)
            self.backend.tracker.save(str(path), base_path=str(path.parent), policy="now")

    def _close(self, failed: bool) -> None:
        self.backend.tracker.finish(exit_code=1 if failed else 0)


def start_tracking(accelerator: Any, kind: str, output_dir: str | Path, run_name: str,
                   params: dict[str, Any]) -> Tracker:
    """Start a tracked run and record the recipe as its parameters.

    Args:
        accelerator: the run's ``accelerate.Accelerator``; only its main process tracks.
            None: use (or create) accelerate's ``PartialState``.
        kind: ``train.tracking``: none, mlflow, tensorboard or wandb.
        output_dir: the run folder; MLflow and TensorBoard stores go inside it.
        run_name: the run's name in the tracker.
        params: the resolved recipe (nested dict); logged flattened, ``train.learning_rate`` style.

    Returns:
        A started :class:`Tracker` (a :class:`NullTracker` for ``none`` or off the main process).

    Raises:
        AyarError: an unknown kind, or the backend's package is not installed.
    """
    if kind not in TRACKERS:
        raise AyarError(f"train.tracking: unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")
    if kind == "none":
        return NullTracker()
    from accelerate import PartialState

    # accelerate's trackers log through accelerate.logging, which needs the process state to exist.
    state = accelerator.state if accelerator is not None else PartialState()
    if not state.is_main_process:
        return NullTracker()
    _require(kind)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return _STARTERS[kind](out, run_name, flatten_params(params))


def flatten_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """``{"train": {"learning_rate": 2e-4}}`` -> ``{"train.learning_rate": 2e-4}``.

    Lists become JSON text and None becomes ``"null"``, so every backend gets the
    same scalar values (TensorBoard's hparams reject both).
    """
    flat: dict[str, str | int | float | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        elif value is None:
            flat[name] = "null"
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), ensure_ascii=False)
        else:
            flat[name] = value
    return flat


def mlflow_uri(output_dir: str | Path) -> str:
    """The tracking URI of a run folder's MLflow store: ``sqlite:///<absolute output_dir>/mlflow.db``."""
    return f"sqlite:///{(Path(output_dir).resolve() / 'mlflow.db').as_posix()}"


def _require(kind: str) -> None:
    modules, command = _REQUIREMENTS[kind]
    if kind == "tensorboard" and _installed("tensorboardX"):  # accelerate falls back to tensorboardX
        return
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise AyarError(f"train.tracking: {kind} needs {', '.join(missing)}, which is not installed; "
                        f"run `{command}`, or set train.tracking: none")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _import_mlflow():
    """Import mlflow with its usage telemetry off, so a run never contacts the network.

    MLflow (>= 3.2) starts a telemetry client at import unless MLFLOW_DISABLE_TELEMETRY
    (or DO_NOT_TRACK) is set; ``set_telemetry_client()`` re-reads the variable, which
    covers an mlflow imported before this function ran. An explicit
    ``MLFLOW_DISABLE_TELEMETRY=false`` from the user is respected.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    try:
        from mlflow.telemetry import set_telemetry_client
    except ImportError:  # an MLflow without telemetry
        return mlflow
    set_telemetry_client()
    return mlflow


def _start_mlflow(out: Path, run_name: str, params: dict[str, Any]) -> Tracker:
    from accelerate.tracking import MLflowTracker

    mlflow = _import_mlflow()
    # accelerate's MLflowTracker works through mlflow's module-level ("fluent") API and takes no
    # tracking URI, so the run folder's store is set process-wide here and restored by finish().
    previous = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(mlflow_uri(out))
    try:
        # logging_dir is the artifact location of the experiment it creates (new store: new experiment).
        backend = MLflowTracker(experiment_name=EXPERIMENT, logging_dir=(out / "mlruns").as_uri(), run_name=run_name)
        backend.start()
        backend.store_init_configuration(params)
    except BaseException:
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED")
        mlflow.set_tracking_uri(previous)
        raise
    return _MlflowRun(backend, f"mlflow ui --backend-store-uri {mlflow_uri(out)}", previous)


def _start_tensorboard(out: Path, run_name: str, params: dict[str, Any]) -> Tracker:
    from accelerate.tracking import TensorBoardTracker

    backend = TensorBoardTracker(run_name, out / "tensorboard")
    backend.start()
    backend.store_init_configuration(params)
    return Tracker("tensorboard", backend, f"tensorboard --logdir {out / 'tensorboard'}")


def _start_wandb(out: Path, run_name: str, params: dict[str, Any]) -> Tracker:
    from accelerate.tracking import WandBTracker

    # accelerate passes its first argument to wandb.init(project=...); the rest are wandb.init kwargs.
    backend = WandBTracker(EXPERIMENT, name=run_name, dir=str(out))
    backend.start()
    backend.store_init_configuration(params)
    return _WandbRun("wandb", backend)


_STARTERS: dict[str, Callable[[Path, str, dict[str, Any]], Tracker]] = {
    "mlflow": _start_mlflow,
    "tensorboard": _start_tensorboard,
    "wandb": _start_wandb,
}
