#!/usr/bin/env bash
# ayar vs TRL on one CUDA GPU: SFT with LoRA (bf16) and QLoRA (nf4) on random-weight Qwen2 0.5B and 1.5B
# shapes built locally (no download). Results: bench/results/gpu.json and a Markdown table on stdout.
# Extra arguments go to bench/gpu.py (e.g. --dry-run: tiny shapes on the CPU). Stops new runs after 420 s and
# the whole bench after 8 minutes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/../src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec timeout 480 "${PYTHON:-python3}" "$here/gpu.py" "$@"
