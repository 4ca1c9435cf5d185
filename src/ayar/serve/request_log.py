"""The opt-in request log of ``ayar serve --request-log FILE``: requests and feedback as JSONL, redacted.

One line per event::

    {"kind": "request", "time": ..., "id": "chatcmpl-...", "model": "support-ab", "served_by": "v2",
     "route": "support-ab", "prompt": [{"role": "user", "content": "[AD_SOYAD] ..."}], "reply": "...",
     "finish_reason": "stop", "prompt_tokens": 31, "completion_tokens": 12, "latency_s": .., "ttft_s": ..}
    {"kind": "feedback", "time": ..., "id": "chatcmpl-...", "model": ..., "served_by": "v2", "route": ...,
     "thumbs": "down", "score": null, "correction": "...", "comment": null}

Every prompt, reply, correction and comment passes ayar's PII redactor (Turkish
recognizers, ``mask`` operator) before it is written: the log never holds a
T.C. Kimlik number, phone number, IBAN, e-mail or name in clear. Redaction runs
on the log's own thread, so the event loop never waits for it. Lines older than
``retention_days`` are removed when the log opens and every hour after.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ayar.errors import AyarError

log = logging.getLogger("ayar.serve")
PRUNE_EVERY_S = 3600.0
_STOP = object()

Redact = Callable[[list[str]], list[str]]


def pii_redactor() -> Redact:
    """ayar's PII redactor (every entity masked) as a function of a batch of texts."""
    from ayar.data.pii.engine import Redactor

    redactor = Redactor()
    return lambda texts: [text for text, _ in redactor.redact_texts(texts)] if texts else []


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class RequestLog:
    """Appends redacted request and feedback records to a JSONL file, pruning old ones.

    Args:
        path: the JSONL file (created with its folder; appended to).
        retention_days: records older than this are removed (at open, then hourly).
        redact: texts -> redacted texts; default :func:`pii_redactor` (built on the log's thread).

    Raises:
        AyarError: ``retention_days`` is not positive, or ``path`` is a folder.
        OSError: the file's folder cannot be created.
    """

    def __init__(self, path: str | Path, retention_days: float = 30.0, redact: Redact | None = None):
        if not retention_days > 0:
            raise AyarError(f"--request-log-days {retention_days}: must be a positive number of days")
        self.path = Path(path)
        if self.path.is_dir():
            raise AyarError(f"--request-log {path}: is a folder; name a JSONL file")
        self.path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable place fails here, before serving
        self.retention = dt.timedelta(days=retention_days)
        self._redact = redact
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ayar-request-log", daemon=True)
        self._pruned_at = 0.0
        self.ready = threading.Event()  # set once the redactor is built

    def start(self) -> None:
        self._thread.start()

    def request(self, record: dict) -> None:
        """Queue a finished request's record (the text fields are redacted before writing)."""
        self._queue.put({"kind": "request", "time": utc_now().isoformat(timespec="milliseconds"), **record})

    def feedback(self, record: dict) -> None:
        """Queue a feedback record."""
        self._queue.put({"kind": "feedback", "time": utc_now().isoformat(timespec="milliseconds"), **record})

    def flush(self) -> None:
        """Wait until everything queued so far is written."""
        if self._thread.is_alive():
            self._queue.join()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        redact = self._redact or pii_redactor()
        self.ready.set()
        self.prune()
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(redact_record(item, redact))
                if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
                    self.prune()
            except Exception:  # a full disk must not stop the server; the operator sees it in the log
                log.exception("the request log could not write a record")
            finally:
                self._queue.task_done()

    def _write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")

    def prune(self, now: dt.datetime | None = None) -> int:
        """Remove records older than the retention period; returns how many were removed.

        Lines that are not JSON records with a ``time`` are kept (they are not ours to judge).
        """
        from ayar.fsutil import atomic_write

        self._pruned_at = time.monotonic()
        if not self.path.is_file():
            return 0
        cutoff = (now or utc_now()) - self.retention
        kept, removed = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            stamp = _time_of(line)
            if stamp is not None and stamp < cutoff:
                removed += 1
            elif line.strip():
                kept.append(line)
        if removed:
            with atomic_write(self.path) as fh:
                fh.write("".join(line + "\n" for line in kept))
        return removed


def _time_of(line: str) -> dt.datetime | None:
    try:
        stamp = dt.datetime.fromisoformat(json.loads(line)["time"])
    except (ValueError, KeyError, TypeError):
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def redact_record(record: dict, redact: Redact) -> dict:
    """``record`` with its prompt, reply, correction and comment redacted (one batch per record)."""
    out = dict(record)
    prompt = out.get("prompt")
    texts: list[str] = []
    if isinstance(prompt, list):
        texts += [m.get("content", "") for m in prompt]
    elif isinstance(prompt, str):
        texts.append(prompt)
    fields = [k for k in ("reply", "correction", "comment") if isinstance(out.get(k), str)]
    texts += [out[k] for k in fields]
    clean = iter(redact(texts))
    if isinstance(prompt, list):
        out["prompt"] = [{**m, "content": next(clean)} for m in prompt]
    elif isinstance(prompt, str):
        out["prompt"] = next(clean)
    for key in fields:
        out[key] = next(clean)
    return out
