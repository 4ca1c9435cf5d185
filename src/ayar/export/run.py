"""``ayar export``: a finished run -> merged weights, adapter, GGUF (+ Modelfile), vLLM launch files.

The path is linear: read the run -> check the request -> load base + adapter in
fp32 -> merge (verified against the unmerged model) -> for each format, write into
a hidden staging folder, verify, write the export manifest, rename into place ->
append to the run's ``exports.jsonl``. A failed check removes the staging folder,
so ``RUN/export/<format>/`` only ever holds a complete, verified export.

Formats are written in the order adapter, gguf, gguf-lora, vllm, merged: GGUF is
converted from the fp32 merge (:mod:`ayar.export.gguf_export`), and saving merged weights casts them in place to ``dtype``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.errors import AyarError
from ayar.export import gguf_export, verify, vllm
from ayar.export import manifest as export_manifest
from ayar.fsutil import check_distinct, fsync_dir
from ayar.govern import record as governance
from ayar.govern.manifest import describe_folder, model_fingerprint, sha256_file
from ayar.model.run_folder import RunFolder
from ayar.ui import console

FORMATS = ("adapter", "gguf", "gguf-lora", "vllm", "merged")  # also the order they are written in
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class ExportResult:
    """One published export.

    Attributes:
        format: ``merged``, ``adapter``, ``gguf`` or ``vllm``.
        folder: where it lies (``<out>/<format>``).
        files: its main artefacts (GGUF files, serve.sh, ...), relative to ``folder``.
        manifest: the export manifest written in ``folder``.
        instructions: how to serve or use it, as shell commands.
    """

    format: str
    folder: Path
    files: list[str]
    manifest: dict[str, Any]
    instructions: str


@dataclass
class _Job:
    """What every format writer gets."""

    source: RunFolder
    verify: bool
    dtype_name: str
    gguf_types: Sequence[str]
    max_shard_size: str
    extra: list[RunFolder]
    model: Any = None  # merged model, fp32 until `merged` casts it
    tokenizer: Any = None
    checks: dict[str, Any] = field(default_factory=dict)


def export_run(run_dir: str | Path, formats: Sequence[str], out_dir: str | Path | None = None, *,
               dtype: str = "auto", gguf_types: Sequence[str] = ("q4_k_m",), verify: bool = True,
               overwrite: bool = False, max_shard_size: str = "5GB",
               extra_adapters: Sequence[str | Path] = (), no_gate: bool = False) -> list[ExportResult]:
    """Export a finished run in each of ``formats``.

    Args:
        run_dir: the run folder (``output_dir`` of ``ayar train``).
        formats: any of ``merged``, ``adapter``, ``gguf``, ``gguf-lora``, ``vllm``.
        out_dir: where the ``<format>/`` folders go; default ``run_dir/export``.
        dtype: weights of ``merged`` (and vLLM's merged copy): ``auto`` (the base's dtype),
            ``fp32``, ``bf16`` or ``fp16``. The merge itself always runs in fp32.
        gguf_types: GGUF files to write (:data:`ayar.export.gguf.GGUF_TYPES`); the first is the one
            the Ollama Modelfile uses, and the base's type for ``gguf-lora``.
        verify: run the checks of :mod:`ayar.export.verify` (off: faster, unchecked).
        overwrite: replace existing export folders (else they are an error).
        max_shard_size: largest safetensors shard of ``merged``.
        extra_adapters: more LoRA run folders on the same base, served beside this one by ``vllm``.
        no_gate: export even when the run fails its recipe's release gate (recorded in the audit ledger).

    Returns:
        One :class:`ExportResult` per format, in the order written.

    Raises:
        AyarError: a bad request (all problems at once), an unfinished run, an
            unsupported model, or a failed verification (:class:`~ayar.export.verify.VerificationError`).
        GateError: the run fails its release gate (see :mod:`ayar.govern.gates`) and ``no_gate`` is false.
    """
    source = RunFolder.open(run_dir)
    gate = governance.gate_for_release(source.run_dir, no_gate, "export")  # raises GateError when it fails
    formats = _check_request(source, formats, dtype, gguf_types, verify, extra_adapters)
    chained = source.merged_init_adapter
    if chained and {"adapter", "vllm", "gguf-lora"} & set(formats):
        raise AyarError(f"{source.run_dir} trained its adapter on a base with {chained} merged in "
                        "(model.init_adapter); the adapter alone does not reproduce it. Export --format merged "
                        "or gguf, which include both")
    out = Path(out_dir) if out_dir is not None else source.run_dir / "export"
    reads = [source.run_dir, *map(Path, extra_adapters)]  # each export folder is replaced whole: none may hold these
    check_distinct({f"run's {n} ({r.name})": r / n for r in reads for n in ("adapter", "model", "recipe.yaml")},
                   {f"the {f} export": out / f for f in formats})
    existing = [str(out / f) for f in formats if (out / f).exists()]
    if existing and not overwrite:
        raise AyarError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace, or --out elsewhere")
    job = _Job(source, verify, dtype, tuple(gguf_types), max_shard_size, [RunFolder.open(r) for r in extra_adapters])
    _check_extra_adapters(job)
    if {"merged", "gguf", "gguf-lora"} & set(formats) or ("vllm" in formats and source.kind != "lora"):
        _load_merged(job)
    results = []
    for fmt in formats:
        console.print(f"export {fmt} ...")
        with _staged(out / fmt) as staging:
            files, details, checks, dtype_written, how = WRITERS[fmt](job, staging, out / fmt)
            record = export_manifest.build_export_manifest(staging, source=source, fmt=fmt, dtype=dtype_written,
                                                           details=details, verification=checks)
            export_manifest.write_export_manifest(staging, record)
        export_manifest.append_export_record(source.run_dir, {
            "time": record["created_at"], "format": fmt, "path": str((out / fmt).resolve()), "dtype": dtype_written,
            "files": files, "verified": checks is not None,
            "manifest_sha256": sha256_file(out / fmt / export_manifest.EXPORT_MANIFEST)})
        governance.record_export(source.run_dir, fmt, out / fmt, record, gate)
        results.append(ExportResult(fmt, out / fmt, files, record, how))
        console.print(f"wrote {out / fmt}" + (" (verified)" if checks is not None else " (not verified)"))
    return results


def _check_request(source: RunFolder, formats: Sequence[str], dtype: str, gguf_types: Sequence[str],
                   verify: bool, extra: Sequence[str | Path]) -> list[str]:
    """The formats in writing order, after checking everything asked for; every problem is reported at once."""
    from ayar.export.gguf import QUANT_FTYPES, check_types

    problems = [f"unknown format {f!r} (choose from {', '.join(FORMATS)})" for f in formats if f not in FORMATS]
    if not formats:
        problems.append(f"no format given (choose from {', '.join(FORMATS)})")
    if dtype not in DTYPE_CHOICES:
        problems.append(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPE_CHOICES)})")
    if {"gguf", "gguf-lora"} & set(formats):
        problems += check_types(gguf_types)
    if "gguf-lora" in formats and source.kind != "lora":
        problems.append(f"gguf-lora needs a LoRA run; {source.run_dir} is {source.kind} (export gguf instead)")
    if "adapter" in formats and not source.is_adapter:
        problems.append(f"{source.run_dir} is a full fine-tune: it has no adapter to export; use merged")
    if extra and "vllm" not in formats:
        problems.append("extra adapters are only served by the vllm format")
    if extra and source.kind != "lora":
        problems.append(f"extra adapters need this run to be a LoRA run too; it is {source.kind}")
    if {"gguf", "gguf-lora"} & set(formats) and (verify or set(gguf_types) & set(QUANT_FTYPES)):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            problems.append("verifying and quantising GGUF files needs llama-cpp-python: `pip install 'ayar[gguf]'` "
                            "(or, for float types only, pass --no-verify)")
    if problems:
        raise AyarError("cannot export:\n" + "\n".join(f"  {p}" for p in problems))
    return [f for f in FORMATS if f in formats]


def _check_extra_adapters(job: _Job) -> None:
    """Extra adapters must be LoRA adapters trained on the same base (same id, same weights)."""
    if not job.extra:
        return
    base = model_fingerprint(job.source.base, job.source.base_revision)
    for other in job.extra:
        if other.kind != "lora":
            raise AyarError(f"{other.run_dir}: a {other.kind} run cannot be served as a LoRA adapter by vLLM")
        if (other.base, other.base_revision) != (job.source.base, job.source.base_revision) or \
                model_fingerprint(other.base, other.base_revision)["files"] != base["files"]:
            raise AyarError(f"{other.run_dir}: trained on {other.base}, not on this run's base {job.source.base}; "
                            "vLLM serves adapters of one base together")
    names = [job.source.name] + [o.name for o in job.extra]
    if len(set(names)) != len(names):
        raise AyarError(f"adapter names (run folder names) must differ: {names}")


def _load_merged(job: _Job) -> None:
    """Load the run in fp32, merge, and (with verify) compare merged and unmerged logits."""
    from ayar.export.merge import load_adapted, merge

    console.print(f"loading {job.source.base}" + (f" + {job.source.kind} adapter" if job.source.is_adapter else ""))
    model, tokenizer = load_adapted(job.source)
    prompts = verify.prompt_ids(tokenizer)
    reference = [verify.logits(model, p) for p in prompts] if job.verify and job.source.is_adapter else None
    job.model, job.tokenizer = merge(model), tokenizer
    if reference is not None:
        job.checks["merge"] = verify.check_merge(reference, job.model, prompts)


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``target``; on success it replaces ``target``, on failure it is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a published folder gets the usual mode
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(target.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- the formats
# Each writer fills the staging folder and returns (main files, details, checks or None, dtype written, how to use).


def _write_adapter(job: _Job, staging: Path, final: Path):
    _copy_adapter(job.source, staging)
    checks = {"copy": _check_copy(job.source, staging)} if job.verify else None
    config = staging / "adapter_config.json"
    how = (f"PEFT:      PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({job.source.base!r}), "
           f"{str(final)!r})")
    return list(ADAPTER_FILES), {"base_model": job.source.base, "kind": job.source.kind,
                                 "lora_rank": job.source.lora_rank, "adapter_config": config.name}, checks, None, how


def _copy_adapter(source: RunFolder, folder: Path) -> None:
    """The adapter and its tokenizer files (everything in ``adapter/``), copied."""
    shutil.copytree(source.weights_dir, folder, dirs_exist_ok=True)


def _check_copy(source: RunFolder, folder: Path) -> dict:
    """The copied adapter files hash as the run's do, and as the run manifest recorded them at training time."""
    import json

    ours, theirs = describe_folder(folder), describe_folder(source.weights_dir)
    if any(theirs[name] != ours.get(name) for name in theirs):
        raise verify.VerificationError(f"{folder}: the copied adapter differs from {source.weights_dir}")
    run_manifest = source.run_manifest
    if not run_manifest.is_file():
        return {"files_identical": True, "matches_run_manifest": None}
    outputs = json.loads(run_manifest.read_text(encoding="utf-8")).get("outputs", {})
    prefix = source.weights_dir.name
    for name in ADAPTER_FILES:
        recorded = outputs.get(f"{prefix}/{name}")
        if recorded is not None and recorded["sha256"] != theirs[name]["sha256"]:
            raise verify.VerificationError(f"{source.weights_dir / name} changed since training: its sha256 is not "
                                           "the one run_manifest.json recorded")
    return {"files_identical": True, "matches_run_manifest": True}


def _write_vllm(job: _Job, staging: Path, final: Path):
    from ayar.chat.templates import end_of_turn_ids

    checks: dict[str, Any] | None = {} if job.verify else None
    if job.source.kind == "lora":
        adapters = []
        for run in [job.source, *job.extra]:
            _copy_adapter(run, staging / "adapters" / run.name)
            adapters.append((run.name, f"adapters/{run.name}"))
            if checks is not None:
                checks[run.name] = _check_copy(run, staging / "adapters" / run.name)
        tokenizer = job.tokenizer or _adapter_tokenizer(job.source)
        plan = vllm.VllmPlan(job.source.base, tuple(adapters), max(r.lora_rank for r in [job.source, *job.extra]),
                             job.source.name, tuple(end_of_turn_ids(tokenizer)))
        dtype_written = None
    else:  # DoRA or full fine-tune: served merged
        checks = dict(job.checks) if job.verify else None
        dtype_written = _save_merged(job, staging / "model", _target_dtype(job), checks)
        tokenizer = job.tokenizer
        plan = vllm.VllmPlan("model", (), 0, job.source.name, tuple(end_of_turn_ids(tokenizer)))
    (staging / "chat_template.jinja").write_text(tokenizer.chat_template, "utf-8")
    (staging / "serve.sh").write_text(vllm.serve_script(plan, job.source.name), "utf-8")
    (staging / "serve.sh").chmod(0o755)
    (staging / "client.py").write_text(vllm.client_example(plan), "utf-8")
    details = {"base_model": job.source.base, "adapters": [n for n, _ in plan.adapters], "merged": not plan.adapters}
    return ["serve.sh", "client.py"], details, checks, dtype_written, vllm.instructions(str(final), plan)


def _adapter_tokenizer(source: RunFolder):
    """The run's tokenizer, without loading any weights (the base's config picks its class)."""
    from transformers import AutoConfig

    from ayar.model.load import load_tokenizer

    config = AutoConfig.from_pretrained(source.base, revision=source.base_revision)
    return load_tokenizer(str(source.weights_dir), config=config)


def _target_dtype(job: _Job):
    """The dtype merged weights are saved in; ``auto`` reads the base's ``config.json`` (the model in
    memory says fp32, as it was loaded in fp32 for merging)."""
    from transformers import AutoConfig

    from ayar.export.merge import export_dtype

    declared = None
    if job.dtype_name == "auto":
        declared = AutoConfig.from_pretrained(job.source.base, revision=job.source.base_revision)
    return export_dtype(job.dtype_name, declared)


def _write_merged(job: _Job, staging: Path, final: Path):
    checks: dict[str, Any] | None = dict(job.checks) if job.verify else None
    dtype_written = _save_merged(job, staging, _target_dtype(job), checks)
    files = sorted(describe_folder(staging, patterns=("*.safetensors",)))
    how = f"transformers: AutoModelForCausalLM.from_pretrained({str(final)!r})"
    return files, {"max_shard_size": job.max_shard_size, "merged_in": "fp32"}, checks, dtype_written, how


def _save_merged(job: _Job, folder: Path, dtype, checks: dict | None) -> str:
    from ayar.export.merge import dtype_name, save_merged

    save_merged(job.model, job.tokenizer, folder, dtype, max_shard_size=job.max_shard_size)
    if checks is not None:
        checks["saved_model"] = verify.check_saved_model(folder, job.model, job.tokenizer)
    return dtype_name(dtype)


WRITERS = {"adapter": _write_adapter, "gguf": gguf_export.write_gguf, "gguf-lora": gguf_export.write_gguf_lora,
           "vllm": _write_vllm, "merged": _write_merged}


# ----------------------------------------------------------------------------- for the demo


def how_to_serve(results: Sequence[ExportResult], run_dir: str | Path) -> str:
    """Shell commands that serve each export, plus ``ayar serve`` on the run itself."""
    lines = [r.instructions for r in results]
    lines.append(f"ayar:      ayar serve {run_dir}   (OpenAI-compatible API; see `ayar serve --help`)")
    return "\n".join(lines)


def export_for_serving(run_dir: str | Path, out_dir: str | Path | None = None, *,
                       gguf_type: str = "q4_k_m") -> tuple[list[ExportResult], str]:
    """Export merged weights and one verified GGUF file (+ Modelfile), replacing earlier ones.

    Returns:
        The results and the "how to serve" text (Ollama, llama.cpp, transformers, ayar serve).
    """
    results = export_run(run_dir, ["merged", "gguf"], out_dir, gguf_types=(gguf_type,), verify=True, overwrite=True)
    return results, how_to_serve(results, run_dir)
