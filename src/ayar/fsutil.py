"""Writing files so that a crash never leaves a half-written one.

Every file ayar writes for the user (datasets, reports, manifests, vaults) goes
through :func:`atomic_write`: a temporary file in the same folder, flushed and
fsynced, then renamed over the destination, and the folder fsynced so the
rename itself survives a power cut. A reader sees the old file or the new one.
"""

from __future__ import annotations

import errno
import os
import shutil
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


def _same(a: Path, b: Path) -> bool:
    """True when two paths name one file: equal once resolved, or the same inode (a hard link)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet
        return False


def _within(inner: Path, outer: Path) -> bool:
    return _same(inner, outer) or outer in inner.parents


def check_distinct(inputs: dict[str, str | Path | None], outputs: dict[str, str | Path | None]) -> None:
    """Refuse a command whose outputs would overwrite one of its inputs or one another.

    Checked on resolved paths (``..``, symbolic links) and inodes (hard links): an
    output may not be an input, nor a folder holding one (folders are replaced
    whole), and no two outputs may be the same file or one inside the other.

    Args:
        inputs: label (as the user wrote the option, e.g. ``"input"``) -> path; None entries are ignored.
        outputs: label -> path; None entries are ignored.

    Raises:
        AyarError: the first clash, naming both labels and the path; nothing has been written.
    """
    from ayar.errors import AyarError

    ins = {k: Path(v).expanduser().resolve() for k, v in inputs.items() if v is not None}
    outs = {k: Path(v).expanduser().resolve() for k, v in outputs.items() if v is not None}
    for out_label, out in outs.items():
        for in_label, path in ins.items():
            if _within(path, out):
                raise AyarError(f"{out_label} {out}: would overwrite the {in_label} ({path}); nothing was written. "
                                f"Choose another path for {out_label}")
    labels = list(outs)
    for i, first in enumerate(labels):
        for second in labels[i + 1:]:
            if _within(outs[first], outs[second]) or _within(outs[second], outs[first]):
                raise AyarError(f"{first} and {second} are the same path ({outs[first]}); nothing was written. "
                                "Give each output its own path")


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder`` and every folder in it, so a rename of ``folder`` publishes whole files."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
    for sub in [p for p in folder.rglob("*") if p.is_dir()] + [folder]:
        fsync_dir(sub)


def replace_folder(tmp: Path, final: Path) -> None:
    """Move a finished folder ``tmp`` to ``final`` (replacing it), never leaving neither in place.

    ``tmp`` is fsynced first; an existing ``final`` is moved aside, not deleted, until the new one is in.
    """
    fsync_tree(tmp)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)


_SPACE = {errno.ENOSPC, errno.EDQUOT}
_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


def os_error_advice(exc: OSError, folder: str | Path, *, during: str, free_hint: str = "") -> str:
    """One line saying what an operating-system error means for the user and what to do.

    Args:
        exc: the error (``exc.errno`` decides the advice).
        folder: the folder being written.
        during: what was being done ("training", "export").
        free_hint: what the user can delete or lower to make room.
    """
    where = str(exc.filename) if exc.filename else str(folder)
    if exc.errno in _SPACE:
        try:
            free = f"{shutil.disk_usage(folder if Path(folder).exists() else Path(folder).parent).free / 2**30:.1f} GiB"
        except OSError:
            free = "unknown"
        return (f"{during} stopped: no space left on the disk holding {folder} (writing {where}; {free} free now). "
                f"Free space{f' ({free_hint})' if free_hint else ''} and run the same command again")
    if exc.errno in _ACCESS:
        return (f"{during} stopped: cannot write {where} ({exc.strerror}); make {folder} writable or choose "
                "another folder")
    return f"{during} stopped: {exc.strerror or exc} ({where})"
