"""Where ayar keeps things outside a run folder: one home directory, chosen once.

``$AYAR_HOME`` (default ``~/.cache/ayar``) holds fetched models (``models/``), the
workspace ledger, converter files and other caches. ``$AYAR_CACHE_DIR`` is the older
name of the same directory and is still honoured.
"""

from __future__ import annotations

import os
from pathlib import Path


def ayar_home() -> Path:
    """The directory ayar caches into (not created here)."""
    configured = os.environ.get("AYAR_HOME") or os.environ.get("AYAR_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ayar"


def models_dir() -> Path:
    """Where `ayar model fetch` puts converted models: one Hugging Face folder per name."""
    return ayar_home() / "models"
