#!/usr/bin/env bash
# Set up, then lint (ruff) and run the test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${CI:-}" = "true" ]; then
  bash scripts/install-browser.sh  # the workbench's browser tests use the system's Chromium
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
