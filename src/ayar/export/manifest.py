"""The export manifest (one per export folder) and the run's export log ``exports.jsonl``.

``export_manifest.json`` records what an export folder holds and where it came
from: the sha256 and size of every file in it, the run (folder and the sha256 of
its run manifest), the base model's content hashes, the format, dtype, ayar
version, time, and the verification measurements. ``exports.jsonl`` in the run
folder gets one line per published export, so a run knows everything made from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar import __version__
from ayar.fsutil import atomic_write
from ayar.govern.manifest import (
    describe_folder,
    model_fingerprint,
    sha256_file,
    utc_now,
    write_json_atomic,
)
from ayar.model.run_folder import RunFolder

EXPORT_MANIFEST = "export_manifest.json"
EXPORT_MANIFEST_VERSION = 1
EXPORTS_LOG = "exports.jsonl"


def run_record(source: RunFolder) -> dict[str, Any]:
    """Which run an export comes from: its folder, kind and the sha256 of its run manifest (None if absent)."""
    run_manifest = source.run_manifest
    return {
        "path": str(source.run_dir.resolve()),
        "kind": source.kind,
        "weights": describe_folder(source.weights_dir),
        "run_manifest_sha256": sha256_file(run_manifest) if run_manifest.is_file() else None,
    }


def build_export_manifest(folder: Path, *, source: RunFolder, fmt: str, dtype: str | None,
                          details: dict[str, Any], verification: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest of the export staged in ``folder``; call it after every other file is written.

    Args:
        folder: the export folder (hashed now).
        source: the run exported.
        fmt: ``merged``, ``adapter``, ``gguf`` or ``vllm``.
        dtype: dtype of the weights written, or None where none are (``vllm`` with an adapter).
        details: format-specific facts (GGUF types, adapter names, shard size).
        verification: the checks' measurements, or None with ``--no-verify``.
    """
    return {
        "ayar_export_manifest_version": EXPORT_MANIFEST_VERSION,
        "format": fmt,
        "created_at": utc_now(),
        "ayar_version": __version__,
        "run": run_record(source),
        "base_model": model_fingerprint(source.base, source.base_revision),
        "dtype": dtype,
        "details": details,
        "verified": verification is not None,
        "verification": verification,
        "files": describe_folder(folder, exclude=(EXPORT_MANIFEST,)),
    }


def write_export_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    return write_json_atomic(folder / EXPORT_MANIFEST, manifest)


def changed_files(folder: str | Path) -> list[str]:
    """Files of an export folder that differ from its manifest: changed, missing or not listed.

    Returns:
        Relative paths, sorted; empty when the folder is exactly what was exported.
    """
    root = Path(folder)
    listed = json.loads((root / EXPORT_MANIFEST).read_text(encoding="utf-8"))["files"]
    listed.pop("README.md", None)  # the model card: `ayar card` rewrites it after the export
    present = describe_folder(root, exclude=(EXPORT_MANIFEST, "README.md"))
    return sorted(name for name in set(listed) | set(present) if listed.get(name) != present.get(name))


def append_export_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Add one JSON line to ``run_dir/exports.jsonl``, rewriting the file atomically (old lines kept)."""
    path = run_dir / EXPORTS_LOG
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    with atomic_write(path) as fh:
        fh.write(old + json.dumps(record, ensure_ascii=False) + "\n")
    return path
