"""The run folder under unlucky conditions: a full disk, a crash while renaming, a torn metrics line."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from ayar.errors import AyarError
from ayar.recipe import load_recipe
from ayar.train import run as train_run
from helpers import colour_conversations, write_jsonl


def write_recipe(folder: Path, model_dir, **extra) -> Path:
    write_jsonl(folder / "train.jsonl", colour_conversations(16, seed=0))
    recipe = {"model": {"path": str(model_dir), "dtype": "fp32"}, "data": {"train": "train.jsonl", "max_length": 48},
              "adapter": {"r": 4, "alpha": 8},
              "train": {"max_steps": 2, "micro_batch_size": 4, "precision": "fp32", "log_every": 1,
                        "tracking": "none"},
              "output_dir": "run", **extra}
    import yaml

    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return folder / "recipe.yaml"


def test_a_full_disk_is_one_clear_error(tmp_path, tiny_llama, monkeypatch):
    def full(out, model, tokenizer, full, weights=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / ".adapter.tmp" / "adapter_model.safetensors"))

    monkeypatch.setattr(train_run, "_save_outputs", full)
    with pytest.raises(AyarError) as caught:
        train_run.train_from_recipe(load_recipe(write_recipe(tmp_path, tiny_llama)))
    message = str(caught.value)
    assert "\n" not in message and "no space left" in message and "Free space" in message
    assert "checkpoints" in message and "run the same command again" in message


def test_the_cli_turns_any_disk_error_into_one_line(tmp_path, monkeypatch, capsys):
    from ayar import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.jsonl"))

    monkeypatch.setattr("ayar.data.pii.redact_jsonl", full)
    (tmp_path / "in.jsonl").write_text("{}\n")
    monkeypatch.setattr("sys.argv", ["ayar", "data", "redact", str(tmp_path / "in.jsonl"), str(tmp_path / "o.jsonl")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    printed = " ".join((captured.err + captured.out).split())
    assert "no space left" in printed and "Traceback" not in printed


def test_training_refuses_an_output_dir_that_holds_its_data(tmp_path, tiny_llama):
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    recipe = write_recipe(tmp_path, tiny_llama)
    write_jsonl(tmp_path / "run" / "adapter" / "train.jsonl", colour_conversations(16, seed=0))
    for data in ("run/adapter/train.jsonl", "run/metrics.jsonl"):
        (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
        text = recipe.read_text().replace("train: train.jsonl", f"train: {data}")
        (tmp_path / "bad.yaml").write_text(text)
        with pytest.raises(AyarError, match="would overwrite the data.train"):
            train_run.train_from_recipe(load_recipe(tmp_path / "bad.yaml"), overwrite=True)
    assert (tmp_path / "run" / "adapter" / "train.jsonl").exists()  # --overwrite deleted nothing


def test_output_folders_are_fsynced_before_they_are_renamed_into_place(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)

    def save(folder: Path) -> None:
        (folder / "sub").mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"w" * 100)
        (folder / "sub" / "tokenizer.json").write_text("{}")

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "old.txt").write_text("the previous adapter")
    final = train_run._save_atomically(tmp_path, "adapter", save)
    moved = next(i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(final))
    synced = {e[1] for e in events[:moved] if e[0] == "fsync"}
    tmp = tmp_path / ".adapter.tmp"
    for name in ("adapter_model.safetensors", "sub/tokenizer.json", "sub", "."):
        assert str((tmp / name).resolve()) in synced, name
    assert ("fsync", str(tmp_path)) in events[moved:]  # and the rename itself made durable
    assert sorted(p.name for p in final.iterdir()) == ["adapter_model.safetensors", "sub"]
    assert not (tmp_path / ".adapter.old").exists() and not tmp.exists()


def test_metrics_trimming_is_atomic_and_tolerates_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 5)]
    path.write_text("\n".join(lines) + '\n{"step": 5, "lo', encoding="utf-8")  # killed mid-write
    inode = path.stat().st_ino
    train_run._trim_metrics(path, Path("step-00000003"))
    assert path.read_text(encoding="utf-8") == "\n".join(lines[:3]) + "\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
