"""Write src/ayar/export/llama_cpp_convert.json: the pinned llama-cpp-python sdist and its converter files.

Usage (once per llama-cpp-python upgrade, on a machine with PyPI access):

    pip download --no-deps --no-binary :all: llama-cpp-python==X.Y.Z -d /tmp/sdist
    python scripts/pin_llama_cpp_convert.py /tmp/sdist/llama_cpp_python-X.Y.Z.tar.gz X.Y.Z

The data file records the sdist's sha256 and the sha256 of every file ayar extracts from it
(see ayar.export.converter.MEMBERS); ayar refuses a converter whose files differ.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ayar.export.converter import DATA_FILE, wanted  # noqa: E402


def main(sdist: str, version: str) -> None:
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    files = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix(prefix)
            if member.isfile() and member.name.startswith(prefix) and wanted(name):
                files[name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    data = {
        "llama_cpp_python": version,
        "sdist": Path(sdist).name,
        "sdist_sha256": hashlib.sha256(Path(sdist).read_bytes()).hexdigest(),
        "prefix": prefix,
        "files": dict(sorted(files.items())),
    }
    DATA_FILE.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"{DATA_FILE}: {len(files)} files pinned")


if __name__ == "__main__":
    main(*sys.argv[1:])
