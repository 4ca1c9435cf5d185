#!/usr/bin/env bash
# Install the system's headless Chromium and chromedriver for the workbench's browser tests (Debian/Ubuntu, as
# root). Best effort: without them those tests are skipped with the reason. Nothing else downloads a browser.
set -uo pipefail
if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-browser: not root on a Debian-like system; the browser tests will be skipped" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
  echo "install-browser: apt-get could not install chromium; the browser tests will be skipped" >&2
fi
exit 0
