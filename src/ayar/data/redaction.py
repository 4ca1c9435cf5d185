"""PII redaction of record batches at scale: each distinct text once, optionally in several processes.

Presidio analyses one text at a time on one core, so ``prepare`` spends most of
its time here. :class:`Redaction` cuts that time two ways while giving the
same output as :meth:`~ayar.data.pii.Redactor.redact_records`:

- repeated texts (a system prompt in every record, boilerplate replies, duplicate
  records) are redacted once and remembered (``CACHE_TEXTS`` texts);
- with ``workers > 1``, batches go to a pool of processes, each with its own
  ``Redactor``, and come back in submission order.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from ayar.data.formats import map_texts, record_texts
from ayar.data.pii.config import RedactionConfig

_worker_redactor = None  # one Redactor per pool process, built by _start_worker
CACHE_TEXTS = 10_000  # redacted texts remembered across batches (system prompts, boilerplate, duplicates)


def _start_worker(config: RedactionConfig) -> None:
    global _worker_redactor
    from ayar.data.pii import Redactor

    _worker_redactor = Redactor(config)


def _redact_in_worker(texts: list[str]) -> list:
    return _worker_redactor.redact_texts(texts)


class Redaction:
    """Redacts the texts of batches of records, in this process or in ``workers`` processes, in order.

    Each text is redacted once: repeated texts (a system prompt in every record, boilerplate
    replies, duplicate records) are looked up in a cache of ``CACHE_TEXTS`` texts. Record field
    names are not context words of any recognizer, so redacting texts gives what
    ``Redactor.redact_records`` gives on the records' JSON form.

    :meth:`submit` takes ``(record, ...)`` tuples and returns, for the batches finished so far,
    ``(item, redacted record or None when dropped, [(finding, redacted text)])``; at most
    ``2 * workers`` batches are in flight, so memory does not grow with the input.

    Raises:
        AyarError: pseudonymize or hash is configured without a secret.
    """

    def __init__(self, config: RedactionConfig | None, workers: int = 1):
        self._redactor = None
        self._pool: ProcessPoolExecutor | None = None
        self._inflight: deque = deque()
        self._window = 2 * workers
        self._cache: dict[str, tuple[str, list]] = {}
        if config is None:
            return
        from ayar.data.pii import Redactor

        self._redactor = Redactor(config)  # checks the secret before anything is read
        # The vault collects replacements in the process that made them: keep it in this one.
        if workers > 1 and config.vault_path is None:
            # fork shares the imported Presidio (workers start in ~0.1 s); it is unsafe on macOS.
            method = "fork" if sys.platform == "linux" else "spawn"
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                             initializer=_start_worker, initargs=(config,))

    def submit(self, items: list[tuple]) -> list[tuple]:
        if not items:
            return []
        if self._redactor is None:
            return [(item, item[0], []) for item in items]
        texts = dict.fromkeys(text for item in items for _, text in record_texts(item[0]))
        known = {text: self._cache[text] for text in texts if text in self._cache}
        missing = [text for text in texts if text not in known]
        if len(self._cache) > CACHE_TEXTS:
            self._cache.clear()
        if self._pool is None:
            return self._assemble(items, known, missing, self._redactor.redact_texts(missing) if missing else [])
        self._inflight.append((items, known, missing, self._pool.submit(_redact_in_worker, missing)))
        done: list[tuple] = []
        while len(self._inflight) > self._window:
            done += self._assemble(*self._finish())
        return done

    def drain(self) -> list[tuple]:
        done: list[tuple] = []
        while self._inflight:
            done += self._assemble(*self._finish())
        return done

    def _finish(self) -> tuple:
        items, known, missing, future = self._inflight.popleft()
        return items, known, missing, future.result()

    def _assemble(self, items: list[tuple], known: dict, missing: list[str], results: list) -> list[tuple]:
        for text, result in zip(missing, results, strict=True):
            known[text] = self._cache[text] = result
        out = []
        for item in items:
            found = [(replace(f, field=label), known[text][0])
                     for label, text in record_texts(item[0]) for f in known[text][1]]
            dropped = any(f.operator == "drop_record" for f, _ in found)
            out.append((item, None if dropped else map_texts(item[0], lambda t: known[t][0]), found))
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def redact_labels(self, labels: list[str]) -> dict[str, str]:
        """``{label: redacted label}`` (stratum values shown in the card)."""
        if self._redactor is None:
            return {label: label for label in labels}
        return {label: text for label, (text, _) in zip(labels, self._redactor.redact_texts(labels), strict=True)}

    def save_vault(self) -> int:
        return self._redactor.save_vault() if self._redactor is not None else 0
