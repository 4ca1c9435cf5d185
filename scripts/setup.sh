#!/usr/bin/env bash
# Create .venv (once) and install ayar with the exact versions tested (constraints.txt).
# torch is pinned explicitly to the CPU build; an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.ayar-installed
if [ ! -f "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # llama-cpp-python (GGUF export checks) builds from source; the default build uses -march=native,
  # which crashes on quantised GGUF on some CPUs with AMX, so name the instruction sets instead.
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
  .venv/bin/python -m pip install --quiet -c constraints.txt "torch==2.13.0" -e ".[test]"
  touch "$stamp"
fi
