#!/usr/bin/env bash
# Set up, then run the offline demo pipeline on CPU (no download): see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ayar demo "$@"
