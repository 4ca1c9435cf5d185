"""The run manifest: a JSON record, in every run folder, of what went into a run and what came out.

It answers the data-protection officer's question "which data is inside this
model?" by content hash, not by file name:

- ``inputs``: sha256 and size of every data file;
- ``base_model``: sha256 of the base model's weights, config and tokenizer files
  (a local folder, or the local Hugging Face cache of a hub id; nothing is downloaded);
- ``outputs``: sha256 and size of every file the run wrote, except the manifest
  itself and the experiment-tracking stores, which keep changing after it is written;
- ``environment``: package versions, hardware and the git commit of the working directory;
- ``recipe``, ``seed``, ``started_at`` / ``ended_at`` (ISO 8601, UTC) and ``final_metrics``.

Everything here is a small pure function of files on disk, so a manifest can be
rebuilt and compared later (``sha256_file`` of an adapter equals its entry).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from ayar import __version__
from ayar.errors import AyarError
from ayar.fsutil import atomic_write

MANIFEST_VERSION = 1
MANIFEST_NAME = "run_manifest.json"

# Weights, configs, tokenizers, chat templates and remote code of a model folder.
MODEL_FILE_PATTERNS = ("*.safetensors", "*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py")

# Files under a run folder that the manifest does not hash: itself, and the tracking stores and
# logs that are still written after it (MLflow logs the manifest as an artifact once it exists).
# Names are relative POSIX paths matched with fnmatch (``*`` also crosses ``/``).
UNHASHED_OUTPUTS = (
    MANIFEST_NAME,
    "mlflow.db",
    "mlflow.db-*",
    "mlruns/*",
    "tensorboard/*",
    "wandb/*",
    "logs/*",
    "*.log",
)

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "bitsandbytes",
            "trl", "mlflow", "mlflow-skinny")

_CHUNK = 1 << 20  # 1 MiB reads: constant memory for multi-gigabyte weight files


# ----------------------------------------------------------------------------- hashing


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path as given: sha256}`` for each file."""
    return {str(p): sha256_file(p) for p in paths}


def list_files(folder: str | Path, patterns: Iterable[str] = ("*",), exclude: Iterable[str] = ()) -> list[str]:
    """Files under ``folder`` as sorted relative POSIX paths.

    A file is kept when its *name* matches one of ``patterns`` and its relative path
    matches none of ``exclude``. Hidden files and folders (a part starting with ``.``:
    temporary files, ``.cache``, ``.git``) are skipped.
    """
    root = Path(folder)
    patterns, exclude = tuple(patterns), tuple(exclude)
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        name = rel.as_posix()
        if any(fnmatch.fnmatch(path.name, p) for p in patterns) and not any(fnmatch.fnmatch(name, p) for p in exclude):
            found.append(name)
    return sorted(found)


def hash_folder(folder: str | Path, patterns: Iterable[str] = MODEL_FILE_PATTERNS,
                exclude: Iterable[str] = ()) -> dict[str, str]:
    """``{relative POSIX path: sha256}`` of the files of :func:`list_files`."""
    root = Path(folder)
    return {rel: sha256_file(root / rel) for rel in list_files(root, patterns, exclude)}


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"sha256": ..., "bytes": ...}`` of one file."""
    return {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def describe_folder(folder: str | Path, patterns: Iterable[str] = ("*",),
                    exclude: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """``{relative POSIX path: file_record}`` of the files of :func:`list_files`."""
    root = Path(folder)
    return {rel: file_record(root / rel) for rel in list_files(root, patterns, exclude)}


# ----------------------------------------------------------------------------- model and machine


def model_fingerprint(model_path_or_id: str, revision: str | None = None) -> dict[str, Any]:
    """Content hashes that identify a base model. Never downloads anything.

    Args:
        model_path_or_id: a local model folder, or a Hugging Face hub id.
        revision: the hub revision the run asked for (branch, tag or commit).

    Returns:
        For a folder: ``{"source": "local", "path", "files": {rel: {sha256, bytes}}}``.
        For a hub id: ``{"source": "hub", "id", "revision", "commit", "files"}``, where
        ``commit`` and ``files`` come from the local HF cache snapshot of that revision
        (``None`` and ``{}`` when it is not cached).
    """
    folder = Path(model_path_or_id).expanduser()
    if folder.is_dir():
        return {"source": "local", "path": str(folder.resolve()),
                "files": describe_folder(folder, MODEL_FILE_PATTERNS)}
    snapshot = _cached_snapshot(model_path_or_id, revision)
    return {
        "source": "hub",
        "id": model_path_or_id,
        "revision": revision or "main",
        "commit": snapshot.name if snapshot else None,
        "files": describe_folder(snapshot, MODEL_FILE_PATTERNS) if snapshot else {},
    }


def _cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The HF cache folder ``snapshots/<commit>`` of ``repo_id`` at ``revision``, if cached.

    ``try_to_load_from_cache`` only reads the cache's folder layout: no network call.
    """
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except (ImportError, ValueError):  # ValueError: not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def environment(cwd: str | Path | None = None) -> dict[str, Any]:
    """Software and hardware the run used.

    Args:
        cwd: folder whose git commit is recorded (default: the current directory).

    Returns:
        ``ayar`` version, python, platform, versions of the ML packages (None when not
        installed), CPU model, core count, RAM, GPUs, and ``git_commit`` (None outside a repo).
    """
    import psutil
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"name": props.name, "memory_bytes": props.total_memory})
    return {
        "ayar": __version__,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": psutil.virtual_memory().total,
        "gpus": gpus,
        "git_commit": _git_commit(Path(cwd) if cwd else Path.cwd()),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:  # Linux: platform.processor() is often empty or just "x86_64"
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(cwd: Path) -> str | None:
    """``git rev-parse HEAD`` in ``cwd``; None without git, outside a repo, or on a slow filesystem."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


# ----------------------------------------------------------------------------- the manifest


def utc_now() -> str:
    """The current time as ISO 8601 UTC, e.g. ``2026-01-31T09:15:02Z``."""
    return iso_utc(datetime.now(timezone.utc))


def iso_utc(moment: str | datetime) -> str:
    """``moment`` (ISO 8601 text or a datetime) as ISO 8601 UTC with a ``Z``; naive times are taken as local.

    Raises:
        AyarError: text that is not an ISO 8601 date and time.
    """
    if isinstance(moment, str):
        text = moment.strip()
        if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat does not read a trailing "Z"
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise AyarError(f"not an ISO 8601 date and time: {moment!r}") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def build_manifest(
    *,
    recipe: dict[str, Any],
    data_files: list[str | None],
    base_model: str,
    output_dir: str | Path,
    seed: int,
    started: str | datetime,
    ended: str | datetime,
    metrics: dict[str, Any],
    base_model_revision: str | None = None,
    exclude_outputs: Iterable[str] = (),
) -> dict[str, Any]:
    """The run manifest as a JSON-ready dict; write it with :func:`write_json_atomic` to ``output_dir/MANIFEST_NAME``.

    Call it after every output is written: ``outputs`` hashes what is in ``output_dir`` now.

    Args:
        recipe: the resolved recipe (``Recipe.model_dump(mode="json")``).
        data_files: the data files read (train, val); ``None`` entries are skipped.
        base_model: local folder or hub id of the base model.
        output_dir: the run folder.
        seed: the run's seed.
        started, ended: start and end times (ISO 8601 text or datetimes).
        metrics: final metrics; NaN and infinities become null (JSON has no NaN).
        base_model_revision: the hub revision of ``base_model``, if one was asked for.
        exclude_outputs: more relative-path patterns to leave out of ``outputs`` (besides
            ``UNHASHED_OUTPUTS``), e.g. ``"checkpoints/*"`` when checkpoints are pruned later.

    Raises:
        AyarError: a data file or the output folder is missing.
    """
    out = Path(output_dir)
    if not out.is_dir():
        raise AyarError(f"{out}: run folder not found; nothing to describe")
    inputs = {}
    for name in data_files:
        if name is None:
            continue
        if not Path(name).is_file():
            raise AyarError(f"{name}: data file not found; it was read by this run, so it has been moved or deleted")
        inputs[str(name)] = file_record(name)
    return {
        "ayar_manifest_version": MANIFEST_VERSION,
        "started_at": iso_utc(started),
        "ended_at": iso_utc(ended),
        "seed": seed,
        "inputs": {"data_files": inputs},
        "base_model": model_fingerprint(base_model, base_model_revision),
        "outputs": describe_folder(out, exclude=(*UNHASHED_OUTPUTS, *exclude_outputs)),
        "final_metrics": _finite(metrics),
        "environment": environment(),
        "recipe": recipe,
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON so that ``path`` is always either the old file or the complete new one.

    The text is serialised first (a failure leaves the disk untouched), then written
    with :func:`ayar.fsutil.atomic_write`.

    Raises:
        TypeError, ValueError: ``obj`` is not JSON-serialisable (NaN included).
    """
    path = Path(path)
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_write(path) as fh:
        fh.write(text)
    return path
