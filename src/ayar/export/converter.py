"""llama.cpp's own GGUF converters, taken from the pinned llama-cpp-python sdist and run as a subprocess.

The llama-cpp-python source distribution carries the llama.cpp tree it was built
from, including ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, the
``conversion/`` package they import and their own ``gguf-py``. ayar keeps exactly
those files (:func:`wanted`) in ``$AYAR_HOME/llama.cpp-convert/<version>/``:

1. the sdist is ``$AYAR_LLAMA_CPP_SDIST`` when set (offline machines), else
   ``pip download --no-deps --no-binary :all: llama-cpp-python==<version>`` (pip's
   cache usually holds it: setup builds llama-cpp-python from the same file);
2. its sha256 must equal the one pinned in ``llama_cpp_convert.json`` (a data file
   written by ``scripts/pin_llama_cpp_convert.py``), else nothing is extracted;
3. before every use, each extracted file must hash as pinned, and the folder must
   hold no other file (a stray ``.py`` or ``.pyc`` would be imported); otherwise
   the converter is refused.

The converters run with ``PYTHONPATH`` starting at *their* ``gguf-py`` (it can be
newer than the installed ``gguf`` package), hub access off and no bytecode
written. Their log is kept; a failure becomes one line (:func:`failure_reason`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ayar.errors import AyarError
from ayar.paths import ayar_home

DATA_FILE = Path(__file__).with_name("llama_cpp_convert.json")
SDIST_ENV = "AYAR_LLAMA_CPP_SDIST"
TOP_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "LICENSE", "gguf-py/LICENSE")


class ConverterError(AyarError):
    """llama.cpp's converter is unavailable, tampered with, or failed on this model."""


@dataclass(frozen=True)
class Converter:
    """A checked copy of llama.cpp's converter scripts.

    Attributes:
        folder: ``$AYAR_HOME/llama.cpp-convert/<version>``.
        version: the llama-cpp-python version they come from.
    """

    folder: Path
    version: str

    @property
    def hf_script(self) -> Path:
        return self.folder / "convert_hf_to_gguf.py"

    @property
    def lora_script(self) -> Path:
        return self.folder / "convert_lora_to_gguf.py"


def wanted(name: str) -> bool:
    """Whether ``name`` (a path under ``vendor/llama.cpp/``) is one of the converter's files."""
    return (name in TOP_FILES or (name.startswith("conversion/") and name.endswith(".py"))
            or (name.startswith("gguf-py/gguf/") and not name.endswith("/")))


@cache
def pins() -> dict:
    """The pinned version, sdist sha256 and per-file sha256 (``llama_cpp_convert.json``)."""
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def converter_dir() -> Path:
    return ayar_home() / "llama.cpp-convert" / pins()["llama_cpp_python"]


def ensure_converter() -> Converter:
    """The checked converter, extracted from the pinned sdist on first use.

    Raises:
        ConverterError: the sdist cannot be obtained or has the wrong hash, or the
            extracted files differ from the pinned ones.
    """
    folder = converter_dir()
    if not folder.is_dir():
        _extract(_obtain_sdist(), folder)
    check_files(folder)
    return Converter(folder, pins()["llama_cpp_python"])


def check_files(folder: Path) -> None:
    """Every pinned file present with its sha256, and nothing else in ``folder``.

    Raises:
        ConverterError: naming the first file that is changed, missing or unexpected.
    """
    from ayar.govern.manifest import sha256_file

    expected = pins()["files"]
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}
    fix = f"delete {folder} and export again to re-extract it from the pinned sdist"
    for name in sorted(present - set(expected)):
        raise ConverterError(f"llama.cpp converter refused: {folder / name} is not one of its pinned files; {fix}")
    for name, digest in expected.items():
        path = folder / name
        if name not in present:
            raise ConverterError(f"llama.cpp converter refused: {path} is missing; {fix}")
        if path.is_symlink() or sha256_file(path) != digest:
            raise ConverterError(f"llama.cpp converter refused: {path} differs from the pinned file; {fix}")


def _obtain_sdist() -> Path:
    """The pinned sdist, checked against its sha256 (kept in a temporary folder the caller need not clean)."""
    from ayar.govern.manifest import sha256_file

    pinned = pins()
    given = os.environ.get(SDIST_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise ConverterError(f"${SDIST_ENV}={given}: no such file")
    else:
        path = _pip_download(pinned["llama_cpp_python"], Path(tempfile.mkdtemp(prefix="ayar-llama-sdist-")))
    if sha256_file(path) != pinned["sdist_sha256"]:
        raise ConverterError(f"{path}: sha256 differs from the pinned llama-cpp-python {pinned['llama_cpp_python']} "
                             "sdist; refusing to use its converter")
    return path


def _pip_download(version: str, target: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={version}", "-d", str(target)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = sorted(target.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no file"]
        raise ConverterError(f"cannot download the llama-cpp-python {version} sdist for llama.cpp's converter "
                             f"({last[0]}); on an offline machine set ${SDIST_ENV} to a copy of it")
    return found[0]


def _extract(sdist: Path, folder: Path) -> None:
    """Extract the pinned files only, into a staging folder renamed into place, read-only."""
    prefix = pins()["prefix"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix(prefix)
                if not (member.isfile() and member.name.startswith(prefix) and name in pins()["files"]):
                    continue
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.chmod(0o444)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def run(converter: Converter, script: Path, args: list[str], log: Path) -> None:
    """Run one converter script; its stdout and stderr go to ``log``.

    Raises:
        ConverterError: the script failed; the message is one line (:func:`failure_reason`).
    """
    check_files(converter.folder)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(converter.folder / "gguf-py"), str(converter.folder)])
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1",
               HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("NO_LOCAL_GGUF", None)
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run([sys.executable, "-B", str(script), *args], stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=str(log.parent))
    if done.returncode != 0:
        reason = failure_reason(log.read_text(encoding="utf-8", errors="replace"))
        raise ConverterError(f"llama.cpp's {script.name} failed: {reason} (log: {log})")


_KNOWN = (
    (re.compile(r"No module named '([\w.]+)'"),
     "llama.cpp's converter needs the Python package {0} (pip install 'ayar[gguf]')"),
    (re.compile(r"Model (\S+) is not supported"), "architecture {0} is not supported by llama.cpp's converter"),
    (re.compile(r"BPE pre-tokenizer was not recognized"),
     "llama.cpp does not know this tokenizer's pre-tokenizer (its hash is not in convert_hf_to_gguf)"),
    (re.compile(r"FileNotFoundError: .*?(tokenizer[\w.]*)"), "tokenizer file {0} is missing"),
    (re.compile(r"No such file or directory: '([^']*config\.json)'"), "{0} is missing"),
    (re.compile(r"JSONDecodeError: (.*)"), "a JSON file of the model is malformed ({0})"),
)


def failure_reason(log_text: str) -> str:
    """One line saying why a converter run failed, from its log.

    Known failures (unsupported architecture, unknown pre-tokenizer, missing tokenizer
    file, malformed JSON) get a plain sentence; otherwise the exception line that ends
    the traceback, or the last ``ERROR`` line.
    """
    for pattern, sentence in _KNOWN:
        found = pattern.search(log_text)
        if found:
            return sentence.format(*found.groups())
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    exceptions = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    picked = exceptions[-1:] or errors[-1:] or lines[-1:] or ["no output"]
    return picked[0][:300]
