"""Crash-safe checkpoints for exact resume.

A checkpoint holds everything the next step depends on: the trainable weights,
the optimizer and scheduler state, every RNG state, the position in the data
stream, the step counters and history, and the resolved recipe. Tensors are
stored as safetensors and everything else as JSON, so loading a checkpoint
never unpickles anything.

Writing is atomic: the files go to a temporary folder beside the final one,
each is fsynced, the folder is renamed into place, and only then is the
``COMPLETE`` marker written (and fsynced). A folder without its marker — a
process killed mid-write — is never used and is cleaned up later.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ayar.fsutil import fsync_dir
from ayar.train.sharding import shard_like, shard_optimizer_state

MARKER = "COMPLETE"
PREFIX = "step-"


@dataclass
class LoopState:
    """Counters of a training run that a checkpoint must restore."""

    step: int = 0  # optimizer steps taken (applied or skipped)
    consumed: int = 0  # global micro-batches read from the data stream
    tokens: int = 0
    target_tokens: int = 0
    elapsed_s: float = 0.0
    bad_steps: int = 0  # consecutive non-finite steps
    skipped_steps: int = 0  # all non-finite steps
    best_eval_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    history: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- nested state <-> safetensors + JSON


def _split(obj, prefix: str, tensors: dict[str, torch.Tensor]):
    """Replace every tensor in a nested structure by a reference into ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_split(k, f"{prefix}.k{i}", tensors), _split(v, f"{prefix}.{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def _join(obj, tensors: dict[str, torch.Tensor]):
    if isinstance(obj, list):
        return [_join(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {_join(k, tensors): _join(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=obj["dtype"])
    return obj


def save_state(folder: Path, name: str, state) -> None:
    """Write a nested state (dicts, lists, tensors, numbers) as ``name.safetensors`` + ``name.json``."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, name, tensors)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton), encoding="utf-8")


def load_state(folder: Path, name: str):
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return _join(json.loads((folder / f"{name}.json").read_text(encoding="utf-8")), tensors)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- checkpoints


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that training changes (adapter weights, or all weights for full fine-tuning).

    Under FSDP these are this process's shards; :func:`ayar.train.sharding.full_tensors` makes them whole.
    """
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(folder)


def save_checkpoint(root: Path, *, weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler,
                    loop: LoopState, recipe_yaml: str) -> Path:
    """Write ``root/step-NNNNNNNN`` atomically and return it.

    Args:
        weights: :func:`trainable_state`, whole (gathered when sharded).
        optimizer_state: the optimizer's ``state_dict()``, whole: the files are the same
            whatever the number of processes.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{loop.step:08d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({n: t.detach().cpu().contiguous() for n, t in weights.items()}, str(tmp / "weights.safetensors"))
    save_state(tmp, "optimizer", optimizer_state)
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
    save_state(tmp, "rng", rng_state())
    (tmp / "loop.json").write_text(json.dumps(asdict(loop)), encoding="utf-8")
    (tmp / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
    _fsync_tree(tmp)
    if final.exists():  # an incomplete folder of the same step from a crashed run
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    (final / MARKER).write_text("ok\n", encoding="utf-8")
    _fsync_tree(final)
    return final


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and is_complete(p))


def load_checkpoint(folder: Path, *, model, optimizer, scheduler) -> LoopState:
    """Restore weights, optimizer, scheduler and RNG from ``folder``; return the loop counters.

    Every process reads the whole checkpoint; a sharded model keeps its own slice of each tensor.

    Raises:
        ValueError: the checkpoint's weights do not match the model's trainable parameters.
    """
    weights = load_file(str(folder / "weights.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights))[:3], sorted(set(weights) - expected)[:3]
        raise ValueError(f"checkpoint {folder} does not fit this model (missing {missing}, unexpected {extra})")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(shard_like(value, params[name]))
    optimizer.load_state_dict(shard_optimizer_state(load_state(folder, "optimizer"), optimizer))
    scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text(encoding="utf-8")))
    set_rng_state(load_state(folder, "rng"))
    return LoopState(**json.loads((folder / "loop.json").read_text(encoding="utf-8")))


def prune_checkpoints(root: Path, keep_last: int, keep: int | None = None) -> None:
    """Delete complete checkpoints except the last ``keep_last`` and step ``keep``; remove incomplete ones."""
    if not root.is_dir():
        return
    complete = complete_checkpoints(root)
    protected = set(complete[-keep_last:]) if keep_last > 0 else set()
    for path in root.iterdir():
        if path.name.startswith(".tmp-") or (path.name.startswith(PREFIX) and not is_complete(path)):
            shutil.rmtree(path, ignore_errors=True)
    for path in complete:
        if path not in protected and (keep is None or path.name != f"{PREFIX}{keep:08d}"):
            shutil.rmtree(path, ignore_errors=True)
