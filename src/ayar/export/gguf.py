"""A Hugging Face folder -> GGUF files of the requested types, through llama.cpp's own tools.

One float GGUF (the *source*) is written by llama.cpp's ``convert_hf_to_gguf.py``
(:mod:`ayar.export.converter`); every quantised type is made from it with
llama.cpp's ``llama_model_quantize`` (through llama-cpp-python), as llama.cpp
users do (``convert_hf_to_gguf.py --outtype f16`` then ``llama-quantize``). The
source is the ``f16`` file, or ``bf16`` for a bf16 base when f16 is not asked for
(f16 could overflow it); it is published only when asked for.

K-quants pack rows in super-blocks of 256 values: llama.cpp stores a matrix whose
rows are not a multiple of 256 long in a fallback type (q5_0, q8_0, ...), so a
model with hidden size 64 gets little smaller from ``q4_k_m``.

Fallback writer. llama.cpp's converter identifies a BPE tokenizer's pre-tokenizer
by the hash of its ids on a check text and refuses tokenizers it has never seen
(custom vocabularies, ayar's tiny test and demo models). For Llama and Qwen2
models only, ayar then writes the float source with its own writer
(:mod:`ayar.export.gguf_writer`), which recognises the pre-tokenizer from
``tokenizer.json`` instead; quantisation and verification are the same.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import AyarError
from ayar.export import converter as llama_convert

FLOAT_TYPES = ("f32", "f16", "bf16")
# ayar's name -> llama.cpp's llama_ftype constant (the names llama-quantize accepts, upper-cased).
QUANT_FTYPES = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
                "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}
GGUF_TYPES = FLOAT_TYPES + tuple(QUANT_FTYPES)
DEFAULT_TYPE = "q4_k_m"  # what Ollama users run
CONVERT_LOG = "convert.log"


@dataclass
class Written:
    """The GGUF files written into a folder and how.

    Attributes:
        files: ``{gguf type: file name}`` of the published files, in the order asked.
        source_type: the float type the quantised files were made from.
        tool: ``llama.cpp convert_hf_to_gguf.py <version>`` or ``ayar gguf_writer (...)``.
        notes: why the fallback writer was used, if it was.
    """

    files: dict[str, str] = field(default_factory=dict)
    source_type: str = ""
    tool: str = ""
    notes: list[str] = field(default_factory=list)


def check_types(gguf_types: Sequence[str]) -> list[str]:
    """Problems with the requested types (empty when fine)."""
    problems = [f"unknown GGUF type {t!r} (choose from {', '.join(GGUF_TYPES)})" for t in gguf_types
                if t not in GGUF_TYPES]
    if not gguf_types:
        problems.append("gguf needs at least one GGUF type")
    if len(set(gguf_types)) != len(gguf_types):
        problems.append(f"GGUF types repeated: {list(gguf_types)}")
    return problems


def source_type(gguf_types: Sequence[str], base_is_bf16: bool) -> str:
    """The float type converted first: the quantised types are made from it (f16 when asked for, else bf16
    for a bf16 base, else f16); without quantised types, the first float type asked for."""
    if any(t in QUANT_FTYPES for t in gguf_types):
        return "f16" if "f16" in gguf_types or not base_is_bf16 else "bf16"
    return gguf_types[0]


def write_gguf_files(hf_folder: Path, out: Path, stem: str, gguf_types: Sequence[str], *, name: str,
                     base_is_bf16: bool, fallback: Callable[[Path, str], Path] | None = None) -> Written:
    """Write ``<stem>-<type>.gguf`` into ``out`` for every type; the converter's log goes to ``out/convert.log``.

    Args:
        hf_folder: a Hugging Face model folder (config, safetensors, tokenizer).
        out: the folder to write into (a staging folder).
        gguf_types: any of :data:`GGUF_TYPES`.
        name: ``general.name`` of the files.
        base_is_bf16: pick bf16 rather than f16 as the quantisation source.
        fallback: ``(path, float type) -> path`` writing the source with ayar's writer, used
            when the converter does not know the tokenizer's pre-tokenizer; None: no fallback.

    Raises:
        AyarError: the converter failed (one line; the log is kept), or quantisation failed.
    """
    written = Written(source_type=source_type(gguf_types, base_is_bf16))
    first = out / f"{stem}-{written.source_type}.gguf"
    try:
        convert_hf(hf_folder, first, written.source_type, out / CONVERT_LOG, name=name)
        written.tool = f"llama.cpp convert_hf_to_gguf.py (llama-cpp-python {llama_convert.pins()['llama_cpp_python']})"
    except llama_convert.ConverterError as error:
        if fallback is None or "pre-tokenizer" not in str(error):
            raise
        fallback(first, written.source_type)
        written.tool = "ayar gguf_writer"
        reason = str(error).split(" (log: ")[0]
        written.notes.append(f"{reason}; wrote the {written.source_type} file with ayar's own Llama/Qwen2 writer "
                             f"(converter log: {CONVERT_LOG})")
    for gguf_type in gguf_types:
        if gguf_type == written.source_type:
            written.files[gguf_type] = first.name
        elif gguf_type in FLOAT_TYPES:  # a second float type: convert again (exact, no requantisation)
            path = out / f"{stem}-{gguf_type}.gguf"
            if written.tool == "ayar gguf_writer":
                fallback(path, gguf_type)
            else:
                convert_hf(hf_folder, path, gguf_type, out / f"convert-{gguf_type}.log", name=name)
            written.files[gguf_type] = path.name
        else:
            path = out / f"{stem}-{gguf_type}.gguf"
            quantize(first, path, gguf_type)
            written.files[gguf_type] = path.name
    if written.source_type not in gguf_types:
        first.unlink()
    return written


def convert_hf(hf_folder: Path, path: Path, outtype: str, log: Path, *, name: str) -> Path:
    """``convert_hf_to_gguf.py --outtype <outtype>`` on ``hf_folder``.

    Raises:
        ConverterError: one line saying why (the log names the rest).
    """
    tool = llama_convert.ensure_converter()
    hf_folder, path, log = hf_folder.resolve(), path.resolve(), log.resolve()  # the script runs in log's folder
    llama_convert.run(tool, tool.hf_script, [str(hf_folder), "--outfile", str(path), "--outtype", outtype,
                                             "--model-name", name], log)
    if not path.is_file():
        raise llama_convert.ConverterError(f"llama.cpp's converter wrote no {path.name} (log: {log})")
    return path


def convert_lora(adapter_folder: Path, base_folder: Path, path: Path, outtype: str, log: Path) -> Path:
    """``convert_lora_to_gguf.py --base <base_folder>`` on a PEFT LoRA adapter folder.

    Raises:
        ConverterError: one line saying why.
    """
    tool = llama_convert.ensure_converter()
    adapter_folder, base_folder = adapter_folder.resolve(), base_folder.resolve()  # the script runs in log's folder
    path, log = path.resolve(), log.resolve()
    llama_convert.run(tool, tool.lora_script, [str(adapter_folder), "--base", str(base_folder), "--outfile",
                                               str(path), "--outtype", outtype], log)
    if not path.is_file():
        raise llama_convert.ConverterError(f"llama.cpp's LoRA converter wrote no {path.name} (log: {log})")
    return path


def quantize(source: Path, target: Path, gguf_type: str, threads: int | None = None) -> Path:
    """Quantise a float GGUF file with llama.cpp's ``llama_model_quantize``.

    Raises:
        AyarError: an unknown type, or llama.cpp reports a failure.
    """
    import llama_cpp

    if gguf_type not in QUANT_FTYPES:
        raise AyarError(f"{gguf_type!r} is not a quantised GGUF type ({', '.join(QUANT_FTYPES)})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[gguf_type])
    params.nthread = threads or max(1, min(8, os.cpu_count() or 1))
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if status != 0 or not target.is_file():
        raise AyarError(f"llama.cpp could not quantise {source.name} to {gguf_type} (status {status})")
    return target


def metadata(path: Path) -> dict:
    """The GGUF key-value metadata of ``path`` (arrays longer than 16 items are left out)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    values = {}
    for key, item in reader.fields.items():
        if len(item.data) <= 16:
            values[key] = item.contents()
    return values


def tensor_types(path: Path) -> dict[str, str]:
    """``{tensor name: GGML type name}`` of a GGUF file."""
    from gguf import GGUFReader

    return {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}
