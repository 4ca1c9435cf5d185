"""The ``gguf`` and ``gguf-lora`` export formats of ``ayar export`` (see :mod:`ayar.export.run`).

``gguf``: the merged fp32 model is saved as a Hugging Face folder beside the
staging folder, converted by llama.cpp's converter (:mod:`ayar.export.gguf`),
quantised, verified file by file against the HF model, and given an Ollama
``Modelfile`` that points at the first type asked for.

``gguf-lora``: the base model (with the run's tokenizer and chat template) becomes
a GGUF file, the PEFT adapter a LoRA GGUF (``convert_lora_to_gguf.py``), and the
Modelfile says ``FROM <base>`` + ``ADAPTER <lora>``. Verified by llama.cpp itself:
base + adapter must continue prompts as the merged GGUF does, and as the HF merged
model does.

A converter failure keeps its log as ``<out>/<format>.convert-failed.log`` (the
staging folder is removed, nothing is published) and says why in one line.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ayar.export import gguf, ollama, verify
from ayar.export.converter import ConverterError

ADAPTER_WEIGHTS = ("adapter_config.json", "adapter_model.safetensors")


def write_gguf(job, staging: Path, final: Path):
    """Writer of the ``gguf`` format: returns (files, details, checks or None, types written, how to use)."""
    model, tokenizer, name = job.model, job.tokenizer, job.source.name
    references = verify.hf_reference(model, verify.prompt_ids(tokenizer)) if job.verify else None
    with _kept_log_on_failure(staging, final), _scratch(final) as scratch:
        hf = _save_fp32(model, tokenizer, scratch / "merged")
        written = gguf.write_gguf_files(hf, staging, name, job.gguf_types, name=name,
                                        base_is_bf16=_base_is_bf16(job.source),
                                        fallback=_writer_fallback(model, tokenizer, name))
    checks: dict[str, Any] = dict(job.checks)
    if references is not None:
        for gguf_type, file in written.files.items():
            if "tokenizer" not in checks:
                checks["tokenizer"] = verify.check_tokenizer(staging / file, tokenizer)
            checks[gguf_type] = verify.check_gguf(staging / file, gguf_type, references)
    first = written.files[job.gguf_types[0]]
    _write_modelfile(staging, first, None, tokenizer, model.config, name)
    details = {**_details(written, model.config), "modelfile_uses": first,
               "top1_agreement": {t: c["top1_agreement"] for t, c in checks.items() if t in written.files}}
    files = list(written.files.values()) + ["Modelfile"]
    return files, details, (checks if references is not None else None), ",".join(job.gguf_types), \
        ollama.instructions(str(final), first, name.lower())


def write_gguf_lora(job, staging: Path, final: Path):
    """Writer of the ``gguf-lora`` format (base GGUF + LoRA GGUF + Modelfile with ``ADAPTER``)."""
    source, tokenizer, name = job.source, job.tokenizer, job.source.name
    gguf_type = job.gguf_types[0]
    adapter_type = "f32" if gguf_type == "f32" else "f16"
    base_stem = gguf_safe(Path(source.base).name) if Path(source.base).is_dir() else gguf_safe(source.base)
    with _kept_log_on_failure(staging, final), _scratch(final) as scratch:
        base_hf = _base_with_run_tokenizer(source, scratch / "base")
        base = gguf.write_gguf_files(base_hf, staging, f"base-{base_stem}", [gguf_type], name=base_stem,
                                     base_is_bf16=_base_is_bf16(source),
                                     fallback=_writer_fallback(_LazyBase(source), tokenizer, base_stem))
        lora_file = f"{name}-lora-{adapter_type}.gguf"
        gguf.convert_lora(source.weights_dir, base_hf, staging / lora_file, adapter_type,
                          staging / "convert-lora.log")
        checks = None
        if job.verify:
            merged = gguf.write_gguf_files(_save_fp32(job.model, tokenizer, scratch / "merged"), scratch, name,
                                           [gguf_type], name=name, base_is_bf16=_base_is_bf16(source),
                                           fallback=_writer_fallback(job.model, tokenizer, name))
            base_path = staging / base.files[gguf_type]
            references = verify.hf_reference(job.model, verify.prompt_ids(tokenizer))
            checks = {**job.checks, "tokenizer": verify.check_tokenizer(base_path, tokenizer),
                      "base_plus_lora_vs_hf": verify.check_gguf(base_path, gguf_type, references,
                                                                 lora=staging / lora_file),
                      "base_plus_lora_vs_merged_gguf": verify.check_lora(
                          base_path, staging / lora_file, scratch / merged.files[gguf_type], gguf_type, tokenizer)}
    base_file = base.files[gguf_type]
    _write_modelfile(staging, base_file, lora_file, tokenizer, job.model.config, name)
    details = {**_details(base, job.model.config), "base_gguf": base_file, "lora_gguf": lora_file,
               "lora_type": adapter_type, "lora_rank": source.lora_rank, "base_model": source.base}
    how = ollama.instructions(str(final), base_file, name.lower()) + f" --lora {final}/{lora_file}"
    return [base_file, lora_file, "Modelfile"], details, checks, gguf_type, how


def gguf_safe(text: str) -> str:
    from ayar.model.run_folder import safe_name

    return safe_name(text.replace("/", "-"))


# ----------------------------------------------------------------------------- helpers


@contextmanager
def _kept_log_on_failure(staging: Path, final: Path) -> Iterator[None]:
    """On a converter failure, copy its logs beside the (unpublished) export and name them in the error."""
    try:
        yield
    except ConverterError as error:
        logs = sorted(staging.glob("*.log"))
        if not logs:
            raise
        kept = final.with_name(f"{final.name}.convert-failed.log")
        kept.write_text("".join(f"==> {p.name}\n{p.read_text('utf-8', 'replace')}\n" for p in logs), "utf-8")
        reason = str(error).split(" (log: ")[0]
        raise ConverterError(f"{reason}; nothing was published (converter log: {kept})") from None


@contextmanager
def _scratch(final: Path) -> Iterator[Path]:
    """A hidden temporary folder beside the export, removed afterwards (merged weights for the converter)."""
    path = Path(tempfile.mkdtemp(prefix=f".{final.name}.scratch-", dir=final.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _save_fp32(model, tokenizer, folder: Path) -> Path:
    """The merged model as an fp32 Hugging Face folder (the model in memory is already fp32: no cast)."""
    import torch

    from ayar.export.merge import save_merged

    return save_merged(model, tokenizer, folder, torch.float32)


def _base_is_bf16(source) -> bool:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source.base, revision=source.base_revision)
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return str(declared).removeprefix("torch.") == "bfloat16"


def _base_folder(source) -> Path:
    """The base model's local folder (a hub id is looked up in the local cache only)."""
    if Path(source.base).is_dir():
        return Path(source.base)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(source.base, revision=source.base_revision, local_files_only=True))


def _base_with_run_tokenizer(source, folder: Path) -> Path:
    """A Hugging Face folder: the base's config and weights (linked), the run's tokenizer and chat template."""
    base = _base_folder(source)
    folder.mkdir(parents=True)
    for path in base.iterdir():
        if path.name in ("config.json", "generation_config.json") or path.name.endswith((".safetensors",
                                                                                         ".safetensors.index.json")):
            (folder / path.name).symlink_to(path.resolve())
    for path in source.weights_dir.iterdir():
        if path.is_file() and path.name not in ADAPTER_WEIGHTS and not path.name.startswith("README"):
            shutil.copy2(path, folder / path.name)
    return folder


class _LazyBase:
    """The base model, loaded (fp32) only if the fallback writer needs it."""

    def __init__(self, source):
        self.source, self._model = source, None

    def get(self):
        if self._model is None:
            import torch

            from ayar.model.load import load_model

            self._model = load_model(self.source.base, dtype=torch.float32, revision=self.source.base_revision).eval()
        return self._model


def _writer_fallback(model, tokenizer, name: str) -> Callable[[Path, str], Path]:
    """ayar's own Llama/Qwen2 writer, for tokenizers llama.cpp's converter does not recognise."""

    def write(path: Path, gguf_type: str) -> Path:
        from ayar.chat.templates import end_of_turn_ids
        from ayar.export.gguf_vocab import gguf_vocab
        from ayar.export.gguf_writer import write_gguf as write_with_ayar

        loaded = model.get() if isinstance(model, _LazyBase) else model
        vocab = gguf_vocab(tokenizer, loaded.get_input_embeddings().weight.shape[0])
        return write_with_ayar(path, loaded, vocab, gguf_type=gguf_type, name=name,
                               chat_template=tokenizer.chat_template, eot_id=end_of_turn_ids(tokenizer)[0])

    return write


def _write_modelfile(staging: Path, model_file: str, adapter_file: str | None, tokenizer, config, name: str) -> None:
    from ayar.chat.templates import end_of_turn_tokens

    meta = gguf.metadata(staging / model_file)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", meta.get("tokenizer.ggml.model") == "llama"))
    text = ollama.modelfile(model_file, tokenizer, stops=end_of_turn_tokens(tokenizer), add_bos=add_bos,
                            context_length=config.max_position_embeddings, model_name=name.lower(), run_name=name,
                            adapter=adapter_file)
    (staging / "Modelfile").write_text(text, "utf-8")


def _details(written: gguf.Written, config) -> dict[str, Any]:
    from importlib.metadata import version

    from ayar.export.converter import pins

    return {"gguf_types": list(written.files), "files": written.files, "merged_in": "fp32",
            "architecture": config.model_type, "quantised_from": written.source_type, "written_by": written.tool,
            "notes": written.notes, "llama_cpp_python": {"converter": pins()["llama_cpp_python"],
                                                         "runtime": version("llama_cpp_python")}}
