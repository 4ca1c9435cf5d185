"""Writing files so that a crash never leaves a half-written one.

Every file ayar writes for the user (datasets, reports, manifests, vaults) goes
through :func:`atomic_write`: a temporary file in the same folder, flushed and
fsynced, then renamed over the destination, and the folder fsynced so the
rename itself survives a power cut. A reader sees the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(folder: str | Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, permissions: int | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block succeeds.

    Args:
        mode: ``"w"`` (UTF-8 text, ``\\n`` newlines) or ``"wb"``.
        permissions: file mode of the result; default: what the umask gives a new file
            (``0o600`` for secrets such as the PII vault).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, permissions if permissions is not None else 0o666 & ~_umask())
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
