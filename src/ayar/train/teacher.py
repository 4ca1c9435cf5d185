"""The teacher of ``method: distill``: kept beside the student, or run once to precompute its top-k.

With ``distill.teacher_logprobs: on_the_fly`` the frozen teacher stays loaded and the objective runs it
on every batch. With ``precompute``, one pass before training stores for every target position of the
train and validation examples the teacher's ``top_k`` token ids and log-probs at the recipe's
temperature, and the log of the mass it leaves to the rest of the vocabulary (the loss is
:func:`ayar.train.distill.topk_forward_kl`); the teacher is then freed, and training runs no teacher
forward — like the DPO reference's ``preference.reference: precompute``.

The file (safetensors, never pickle) is named by a hash of everything its numbers depend on: the
teacher's weights (base, merged init adapter and adapter files, hashed), revision, quantisation and
dtype, the autocast dtype, the temperature, top_k, data.max_length, the student tokenizer's vocabulary,
and every example's token ids and labels (so the data, its chat template and truncation). A re-run or a
resume finds it without loading the teacher; changed data or settings name another file, never a stale
one. Size: ``8 k + 4`` bytes per target token (int32 ids, fp32 log-probs, one fp32 rest), e.g. 1M
target tokens at k = 64 take 516 MB on disk, and as much RAM while training.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ayar.chat.tokenize import IGNORE_INDEX as IGNORE
from ayar.train.batching import collate
from ayar.train.distill import TaughtExample, check_shared_tokenizer, target_logits, teacher_topk
from ayar.train.losses import unwrap
from ayar.train.objectives import cache_dir, files_digest

CACHE_FORMAT = "distill-topk-1"  # bump when the stored tensors change meaning
SET_NAMES = ("train", "val")


def teacher_dtype(device: torch.device) -> str:
    """The teacher's weight dtype: fp32 on the CPU, else ``auto`` (bf16 where the device computes it)."""
    return "fp32" if device.type == "cpu" else "auto"


def load_teacher(path: str, student: nn.Module, student_tokenizer, device: torch.device) -> nn.Module:
    """The frozen teacher (a model folder, or a run folder: base plus adapter) on ``device``, in eval mode.

    Raises:
        AyarError: the teacher cannot be loaded or does not share the student's tokenizer.
    """
    from ayar.model.run_folder import load_for_inference

    teacher, tokenizer = load_for_inference(path, dtype=teacher_dtype(device), device=device)
    check_shared_tokenizer(student_tokenizer, tokenizer, unwrap(student).get_output_embeddings().weight.shape[0],
                           unwrap(teacher).get_output_embeddings().weight.shape[0], path)
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def teacher_key(recipe, tokenizer, k: int, head: int, amp: torch.dtype | None, device: torch.device) -> dict:
    """What the precomputed top-k depends on besides the examples' token ids (see the module docstring).

    ``head`` is the student's output size: with the tokenizer's vocabulary it makes a cache hit
    imply the shared-tokenizer check (:func:`load_teacher`) that passed when the file was written.
    A hub id is keyed by its name and revision: pin a commit for a cache that cannot outlive a
    changed upstream model.
    """
    from ayar.model.run_folder import model_spec

    d = recipe.distill
    spec = model_spec(d.teacher)
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode()
    return {"format": CACHE_FORMAT, "teacher": files_digest(spec.base), "revision": spec.revision,
            "quantization": spec.quantization,
            "init_adapter": files_digest(spec.init_adapter) if spec.init_adapter else None,
            "adapter": files_digest(spec.adapter) if spec.adapter else None,
            "dtype": teacher_dtype(device), "device": device.type, "autocast": str(amp),
            "temperature": d.temperature, "top_k": k, "max_length": recipe.data.max_length,
            "vocabulary": hashlib.sha256(vocab).hexdigest(), "head": head}


def _targets(example) -> int:
    return sum(1 for t in example.labels[1:] if t != IGNORE)  # position t predicts token t + 1


def _examples_digest(examples: Sequence) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([list(e.input_ids), list(e.labels)], separators=(",", ":")).encode())
    return h.hexdigest()


@torch.no_grad()
def topk_pass(teacher: nn.Module, examples: Sequence, *, k: int, temperature: float, pad_id: int, batch_size: int,
              amp: torch.dtype | None, device: torch.device,
              update: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """The teacher's top-k at every target position of ``examples``, concatenated in example order.

    Returns:
        ``ids`` (targets, k) int32, ``logps`` (targets, k) fp32, ``rest`` (targets,) fp32, and
        ``offsets`` (examples + 1,) int64: example ``j`` owns rows ``offsets[j]:offsets[j + 1]``.
    """
    counts = [_targets(e) for e in examples]
    offsets = torch.zeros(len(examples) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
    total = int(offsets[-1])
    out = {"ids": torch.empty((total, k), dtype=torch.int32), "logps": torch.empty((total, k)),
           "rest": torch.empty(total), "offsets": offsets}
    autocast = torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    # longest first, so each batch holds rows of similar length (little padding); rows go back in example order
    order = sorted(range(len(examples)), key=lambda j: -len(examples[j].input_ids))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = {key: v.to(device) for key, v in collate([examples[j] for j in chunk], pad_id).items()}
        with autocast:
            logits, _ = target_logits(teacher, batch["input_ids"], batch["labels"], batch["attention_mask"])
        ids, logps, rest = (t.cpu() for t in teacher_topk(logits, k, temperature))  # (batch targets, ...)
        row = 0
        for j in chunk:  # the batch's target rows are row-major: example by example, position by position
            a, n = int(offsets[j]), counts[j]
            out["ids"][a:a + n], out["logps"][a:a + n], out["rest"][a:a + n] = \
                ids[row:row + n], logps[row:row + n], rest[row:row + n]
            row += n
        if update:
            update(len(chunk))
    return out


def _attach(examples: Sequence, stored: dict[str, torch.Tensor]) -> list[TaughtExample]:
    o = stored["offsets"].tolist()
    return [TaughtExample(e.input_ids, e.labels, stored["ids"][o[j]:o[j + 1]], stored["logps"][o[j]:o[j + 1]],
                          stored["rest"][o[j]:o[j + 1]]) for j, e in enumerate(examples)]


def _read_cache(path: Path, key: str, example_sets: Sequence[Sequence]) -> list[dict] | None:
    """The stored sets, or None when the file is missing or does not belong to these examples."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if (fh.metadata() or {}).get("key") != key:
                return None
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError):
        return None
    sets = []
    for name, examples in zip(SET_NAMES, example_sets, strict=False):
        stored = {part: tensors.get(f"{name}.{part}") for part in ("ids", "logps", "rest", "offsets")}
        if not examples:
            sets.append(None)
            continue
        if any(v is None for v in stored.values()) or \
                stored["offsets"].diff().tolist() != [_targets(e) for e in examples]:
            return None
        sets.append(stored)
    return sets


def _write_cache(path: Path, key: str, key_parts: dict, sets: Sequence[dict | None]) -> None:
    """Write the sets atomically (a temporary file, fsynced, then renamed)."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{part}": t.contiguous() for name, stored in zip(SET_NAMES, sets, strict=False)
               if stored is not None for part, t in stored.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={"key": key, "key_parts": json.dumps(key_parts, sort_keys=True)})
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def precompute_teacher(load: Callable[[], nn.Module], example_sets: Sequence[Sequence], *, k: int,
                       temperature: float, pad_id: int, batch_size: int, amp: torch.dtype | None,
                       device: torch.device, key_parts: dict, folder: str | None
                       ) -> tuple[list[list[TaughtExample]], Path, bool]:
    """The examples with the teacher's top-k attached: from the cache, or by one pass with the teacher.

    Args:
        load: returns the teacher; called only on a cache miss. The teacher is dropped (and the
            device's cache emptied) before this returns, so training never holds it.
        example_sets: the train examples, then the validation examples (possibly empty).
        key_parts: :func:`teacher_key`; the examples' digests are added to it.
        folder: ``distill.cache_dir`` (None: $AYAR_CACHE_DIR or ~/.cache/ayar).

    Returns:
        (the sets as :class:`TaughtExample` lists, the cache file, whether it was a cache hit).
    """
    from ayar.ui import step_progress

    parts = {**key_parts, "examples": [_examples_digest(s) for s in example_sets]}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    path = cache_dir(folder, "teacher") / f"{key}.safetensors"
    stored = _read_cache(path, key, example_sets)
    hit = stored is not None
    if not hit:
        teacher = load()
        try:
            total = sum(len(s) for s in example_sets)
            with step_progress("teacher top-k") as progress:
                done = 0

                def update(n: int) -> None:
                    nonlocal done
                    done += n
                    progress(done, total, {})

                stored = [topk_pass(teacher, s, k=k, temperature=temperature, pad_id=pad_id, batch_size=batch_size,
                                    amp=amp, device=device, update=update) if s else None for s in example_sets]
        finally:
            del teacher  # the only reference: the teacher's memory is released here
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        _write_cache(path, key, parts, stored)
    sets = [_attach(s, t) if t is not None else [] for s, t in zip(example_sets, stored, strict=True)]
    return sets, path, hit


def prepare_teacher(recipe, student: nn.Module, tokenizer, example_sets: Sequence[Sequence], device: torch.device,
                    amp: torch.dtype | None) -> tuple[nn.Module | None, list, str]:
    """The teacher as the recipe asks: loaded (on the fly), or its top-k precomputed into the examples.

    Returns:
        (the teacher, or None when precomputed; the example sets to train on; a note for the run's log).

    Raises:
        AyarError: the teacher cannot be loaded or does not share the student's tokenizer.
    """
    d = recipe.distill
    if d.teacher_logprobs == "on_the_fly":
        return load_teacher(d.teacher, student, tokenizer, device), list(example_sets), \
            f"; teacher {d.teacher} (T={d.temperature:g}, on the fly)"
    vocab = unwrap(student).get_output_embeddings().weight.shape[0]
    k = min(d.top_k, vocab)
    sets, path, hit = precompute_teacher(
        lambda: load_teacher(d.teacher, student, tokenizer, device), example_sets, k=k, temperature=d.temperature,
        pad_id=tokenizer.pad_token_id, batch_size=recipe.train.micro_batch_size, amp=amp, device=device,
        key_parts=teacher_key(recipe, tokenizer, k, vocab, amp, device), folder=d.cache_dir)
    size = path.stat().st_size / 2**20
    return None, sets, (f"; teacher {d.teacher} (T={d.temperature:g}): top-{k} log-probs "
                        f"{'read from' if hit else 'precomputed into'} {path} ({size:.1f} MiB), teacher not kept")
