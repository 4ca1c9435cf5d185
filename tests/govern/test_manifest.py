"""Run manifest: hashes equal hashlib's, outputs match the files, the JSON writer is atomic."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from ayar.errors import AyarError
from ayar.govern import manifest as mf


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def model_dir(tmp_path):
    """A model folder: weights, config, tokenizer, plus files the fingerprint must ignore."""
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    files = {
        "model.safetensors": os.urandom(3 * (1 << 20) + 7),  # several read chunks, not a multiple of one
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b'{"version": "1.0"}',
        "sub/chat_template.jinja": b"{{ messages }}",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "README.md").write_text("not hashed")
    (folder / ".cache" / "x.json").write_text("{}")
    return folder, files


def test_sha256_file_and_hash_files_equal_hashlib(model_dir):
    folder, files = model_dir
    weights = folder / "model.safetensors"
    assert mf.sha256_file(weights) == sha(files["model.safetensors"])
    assert mf.hash_files([weights, str(folder / "config.json")]) == {
        str(weights): sha(files["model.safetensors"]), str(folder / "config.json"): sha(files["config.json"])}


def test_hash_folder_keeps_model_files_and_skips_hidden(model_dir):
    folder, files = model_dir
    assert mf.hash_folder(folder) == {name: sha(data) for name, data in sorted(files.items())}
    assert mf.hash_folder(folder, patterns=("*.json",)) == {"config.json": sha(files["config.json"]),
                                                           "tokenizer.json": sha(files["tokenizer.json"])}


def test_model_fingerprint_local_folder(model_dir):
    folder, files = model_dir
    fp = mf.model_fingerprint(str(folder))
    assert fp["source"] == "local" and fp["path"] == str(folder.resolve())
    assert fp["files"] == {n: {"sha256": sha(d), "bytes": len(d)} for n, d in sorted(files.items())}


def test_model_fingerprint_hub_id_reads_the_local_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = "a" * 40
    repo = cache / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_bytes(b"{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    fp = mf.model_fingerprint("org/tiny")
    assert fp == {"source": "hub", "id": "org/tiny", "revision": "main", "commit": commit,
                  "files": {"config.json": {"sha256": sha(b"{}"), "bytes": 2}}}
    missing = mf.model_fingerprint("org/absent", revision="v1")
    assert missing == {"source": "hub", "id": "org/absent", "revision": "v1", "commit": None, "files": {}}


def test_environment_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to find: recorded as None, no error
    env = mf.environment(cwd=tmp_path)
    assert env["git_commit"] is None
    assert env["ayar"] and env["packages"]["torch"] and env["cpu_count"] >= 1 and env["ram_bytes"] > 0
    assert isinstance(env["gpus"], list) and env["cpu"]


def test_iso_utc():
    assert mf.iso_utc("2026-01-31T12:15:02+03:00") == "2026-01-31T09:15:02Z"
    assert mf.iso_utc("2026-01-31T09:15:02Z") == "2026-01-31T09:15:02Z"
    assert mf.utc_now().endswith("Z")
    with pytest.raises(AyarError, match="ISO 8601"):
        mf.iso_utc("yesterday")


def test_build_manifest_hashes_inputs_model_and_outputs(tmp_path, model_dir, monkeypatch):
    monkeypatch.setattr(mf, "_git_commit", lambda cwd: "0123abc")
    folder, files = model_dir
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "merhaba"}\n', encoding="utf-8")
    out = tmp_path / "run"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00\x01" * 100)
    (out / "summary.json").write_text("{}")
    # written by trackers, still changing after the manifest, or excluded by the caller: not hashed
    for name in ["mlflow.db", "mlruns/1/artifacts/recipe.yaml", "tensorboard/run/events.out", "train.log",
                 "checkpoints/step-1/optimizer.safetensors",
                 mf.MANIFEST_NAME, ".summary.json.tmp"]:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")

    manifest = mf.build_manifest(
        recipe={"train": {"seed": 7}}, data_files=[str(data), None], base_model=str(folder), output_dir=out,
        seed=7, started="2026-01-31T09:00:00Z", ended="2026-01-31T10:00:00+01:00",
        metrics={"final_loss": 0.5, "eval_loss": float("nan")}, exclude_outputs=["checkpoints/*"])

    assert manifest["ayar_manifest_version"] == 1
    assert manifest["inputs"]["data_files"] == {str(data): {"sha256": mf.sha256_file(data),
                                                            "bytes": data.stat().st_size}}
    assert manifest["base_model"]["files"]["model.safetensors"]["sha256"] == sha(files["model.safetensors"])
    assert sorted(manifest["outputs"]) == ["adapter/adapter_model.safetensors", "summary.json"]
    for rel, entry in manifest["outputs"].items():
        assert entry == {"sha256": hashlib.sha256((out / rel).read_bytes()).hexdigest(),
                         "bytes": (out / rel).stat().st_size}
    assert (manifest["started_at"], manifest["ended_at"]) == ("2026-01-31T09:00:00Z", "2026-01-31T09:00:00Z")
    assert manifest["final_metrics"] == {"final_loss": 0.5, "eval_loss": None}
    assert manifest["seed"] == 7 and manifest["recipe"] == {"train": {"seed": 7}}
    assert manifest["environment"]["git_commit"] == "0123abc"

    path = mf.write_json_atomic(out / mf.MANIFEST_NAME, manifest)
    assert json.loads(path.read_text(encoding="utf-8")) == manifest


def test_build_manifest_names_a_missing_data_file(tmp_path):
    with pytest.raises(AyarError, match="gone.jsonl: data file not found"):
        mf.build_manifest(recipe={}, data_files=[str(tmp_path / "gone.jsonl")], base_model=str(tmp_path),
                          output_dir=tmp_path, seed=0, started=mf.utc_now(), ended=mf.utc_now(), metrics={})


def test_write_json_atomic_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "m.json"
    mf.write_json_atomic(path, {"a": 1})
    mf.write_json_atomic(path, {"a": 2, "ç": "ş"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 2, "ç": "ş"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


@pytest.mark.parametrize("bad", [{"x": object()}, {"loss": float("nan")}])
def test_write_json_atomic_keeps_the_old_file_when_serialisation_fails(tmp_path, bad):
    path = tmp_path / "m.json"
    mf.write_json_atomic(path, {"ok": True})
    with pytest.raises((TypeError, ValueError)):
        mf.write_json_atomic(path, bad)
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_write_json_atomic_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    mf.write_json_atomic(path, {"ok": True})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(mf.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        mf.write_json_atomic(path, {"ok": False})
    assert json.loads(path.read_text(encoding="utf-8")) == {"ok": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
