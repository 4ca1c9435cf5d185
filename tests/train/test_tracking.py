"""Experiment tracking: an MLflow run in the run folder is readable back; none records nothing."""

from __future__ import annotations

import shutil
import socket
import sys
import types

import pytest

from ayar.errors import AyarError
from ayar.govern.manifest import UNHASHED_OUTPUTS, describe_folder
from ayar.train import tracking
from ayar.train.tracking import NullTracker, flatten_params, mlflow_uri, start_tracking

RECIPE = {"model": {"path": "org/tiny", "revision": None},
          "train": {"learning_rate": 2e-4, "adam_betas": [0.9, 0.999], "seed": 3, "max_steps": None}}


def records(losses: list[float]) -> list[dict]:
    """Metric records as the training loop writes them."""
    return [{"step": i, "loss": loss, "lr": 1e-3 / i, "target_tokens": 10 * i, "note": "skipped"}
            for i, loss in enumerate(losses, start=1)]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Fail on any network connection; hide this repository from MLflow's git tags (argv[0] is outside it)."""

    def refuse(self, address):
        if self.family != socket.AF_UNIX:
            raise AssertionError(f"tracking tried to reach the network: {address}")
        return real_connect(self, address)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "ayar")])


def test_flatten_params():
    assert flatten_params(RECIPE) == {"model.path": "org/tiny", "model.revision": "null",
                                      "train.learning_rate": 2e-4, "train.adam_betas": "[0.9, 0.999]",
                                      "train.seed": 3, "train.max_steps": "null"}


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # mlflow on SQLAlchemy 2.1
@pytest.mark.slow
def test_mlflow_runs_one_after_another_are_readable_from_their_run_folders(tmp_path, offline):
    pytest.importorskip("sqlalchemy")
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    # Creating a store runs MLflow's schema migrations (seconds on a busy CPU): create one empty
    # store and copy it into both run folders.
    MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/empty.db").search_experiments()
    out, out2 = tmp_path / "run1", tmp_path / "run2"
    for folder in (out, out2):
        folder.mkdir()
        shutil.copyfile(tmp_path / "empty.db", folder / "mlflow.db")

    uri_before = mlflow.get_tracking_uri()
    with start_tracking(None, "mlflow", out, run_name="first", params=RECIPE) as tracker:
        for record in records([2.0, 1.5, 1.25]):
            tracker.log(record, step=record["step"])
        (out / "recipe.yaml").write_text("train:\n  seed: 3\n")
        (out / "run_manifest.json").write_text("{}")
        tracker.log_artifact(out / "recipe.yaml")
        tracker.log_artifact(out / "run_manifest.json")
    assert tracker.view_command == f"mlflow ui --backend-store-uri sqlite:///{out.resolve()}/mlflow.db"
    assert mlflow.get_tracking_uri() == uri_before and mlflow.active_run() is None

    # a second training in the same process, which crashes: its own store, marked FAILED
    with pytest.raises(RuntimeError, match="boom"), start_tracking(None, "mlflow", out2, "second", RECIPE) as t2:
        t2.log({"step": 1, "loss": 9.0}, step=1)
        raise RuntimeError("boom")

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("ayar").experiment_id])
    assert run.info.run_name == "first" and run.info.status == "FINISHED"
    assert run.data.params == {"model.path": "org/tiny", "model.revision": "null", "train.learning_rate": "0.0002",
                               "train.adam_betas": "[0.9, 0.999]", "train.seed": "3", "train.max_steps": "null"}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert sorted(run.data.metrics) == ["loss", "lr", "target_tokens"]  # "step" and text are not metrics
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["recipe.yaml", "run_manifest.json"]
    assert list((out / "mlruns").rglob("run_manifest.json"))  # artifacts live inside the run folder

    client2 = MlflowClient(tracking_uri=mlflow_uri(out2))
    (run2,) = client2.search_runs([client2.get_experiment_by_name("ayar").experiment_id])
    assert run2.info.run_name == "second" and run2.info.status == "FAILED"
    assert [m.value for m in client2.get_metric_history(run2.info.run_id, "loss")] == [9.0]

    # the tracking store is not part of the manifest's hashed outputs
    assert set(describe_folder(out, exclude=UNHASHED_OUTPUTS)) == {"recipe.yaml"}


def test_mlflow_telemetry_is_switched_off(monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    mlflow = tracking._import_mlflow()
    assert tracking.os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert mlflow.telemetry.get_telemetry_client() is None


def test_none_records_nothing(tmp_path):
    out = tmp_path / "run"
    tracker = start_tracking(None, "none", out, run_name="r", params=RECIPE)
    assert isinstance(tracker, NullTracker) and tracker.view_command is None
    with tracker:
        tracker.log({"step": 1, "loss": 1.0}, step=1)
        tracker.log_artifact(tmp_path / "missing.yaml")
    tracker.finish()
    assert not out.exists()


def test_only_the_main_process_tracks(tmp_path):
    worker = types.SimpleNamespace(state=types.SimpleNamespace(is_main_process=False))
    assert isinstance(start_tracking(worker, "mlflow", tmp_path / "run", "r", RECIPE), NullTracker)
    assert not (tmp_path / "run").exists()


def test_unknown_kind_and_missing_packages_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(AyarError, match="unknown tracker 'mlfow'; choose one of none, mlflow"):
        start_tracking(None, "mlfow", tmp_path, "r", {})
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    with pytest.raises(AyarError, match=r"wandb needs wandb.*`pip install wandb`, or set train.tracking: none"):
        start_tracking(None, "wandb", tmp_path, "r", {})
    with pytest.raises(AyarError, match=r"`pip install mlflow-skinny sqlalchemy alembic`"):
        start_tracking(None, "mlflow", tmp_path, "r", {})
    with pytest.raises(AyarError, match=r"`pip install tensorboard`"):
        start_tracking(None, "tensorboard", tmp_path, "r", {})


def test_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    import torch
    from accelerate import Accelerator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")  # as run.py builds it
    out = tmp_path / "run"
    with start_tracking(accelerator, "tensorboard", out, run_name="tb", params=RECIPE) as tracker:
        for record in records([2.0, 1.5]):
            tracker.log(record, step=record["step"])
    logdir = out / "tensorboard" / "tb"
    assert tracker.view_command == f"tensorboard --logdir {out.resolve() / 'tensorboard'}"
    events = EventAccumulator(str(logdir))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 2.0), (2, 1.5)]


def test_wandb_is_driven_through_accelerate_without_contacting_wandb(tmp_path, monkeypatch):
    """A stand-in ``wandb`` module records the calls; the real package is never imported."""
    calls = []
    run = types.SimpleNamespace(
        log=lambda values, step=None: calls.append(("log", values, step)),
        save=lambda path, base_path, policy: calls.append(("save", path, policy)),
        finish=lambda exit_code=0: calls.append(("finish", exit_code)),
    )
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or run
    fake.config = types.SimpleNamespace(update=lambda values, allow_val_change: calls.append(("config", values)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(tracking, "_installed", lambda module: True)

    out = tmp_path / "run"
    with start_tracking(None, "wandb", out, run_name="w", params={"train": {"seed": 3}}) as tracker:
        tracker.log({"step": 1, "loss": 2.0}, step=1)
        tracker.log_artifact(out / "recipe.yaml")
    assert calls == [
        ("init", {"project": "ayar", "name": "w", "dir": str(out.resolve())}),
        ("config", {"train.seed": 3}),
        ("log", {"loss": 2.0}, 1),
        ("save", str(out / "recipe.yaml"), "now"),
        ("finish", 0),
    ]
