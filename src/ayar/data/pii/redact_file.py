"""Redact a JSONL file: one JSON object per line in, the same objects redacted out.

The output (and the report and rejects files) are written to a temporary file
next to the destination and moved into place with ``os.replace``, so a failed
run never leaves a half-written file. No output may be the input or another
output (checked on resolved paths before anything is read), and the vault is
saved before the output is moved into place: redacted data never exists
without the record of what it replaced. Nothing written holds an original
value: the report counts entity types and quotes redacted snippets only, and
the rejects file lists dropped records by line number and entity types.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ...errors import AyarError
from ...fsutil import atomic_write, check_distinct
from .config import RedactionConfig
from .engine import Finding, Redactor, field_texts

MAX_LISTED_PROBLEMS = 10
SNIPPET_CONTEXT = 40  # characters kept on each side of a replacement in report examples


def _snippet(text: str, finding: Finding) -> str:
    start = max(0, finding.output_start - SNIPPET_CONTEXT)
    end = finding.output_end + SNIPPET_CONTEXT
    snippet = " ".join(text[start:end].split())
    return ("…" if start > 0 else "") + snippet + ("…" if end < len(text) else "")


class _Report:
    """Counts and examples gathered while a file is redacted."""

    def __init__(self, max_examples: int):
        self.records = self.changed = self.dropped = 0
        self.entities: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self._max_examples = max_examples
        self._example_types: set[str] = set()

    def add(self, line: int, record: dict | None, findings: list[Finding]) -> None:
        self.records += 1
        self.changed += bool(findings)
        self.dropped += record is None
        self.entities.update(f.entity_type for f in findings)
        if record is None or len(self.examples) >= self._max_examples:
            return
        # One example per entity type first, so the report shows the variety of what was found.
        texts: dict[str, str] | None = None
        for finding in findings:
            if finding.entity_type in self._example_types or len(self.examples) >= self._max_examples:
                continue
            texts = texts or field_texts(record)
            self._example_types.add(finding.entity_type)
            self.examples.append({"line": line, "field": finding.field, "entity_type": finding.entity_type,
                                  "snippet": _snippet(texts[finding.field], finding)})


def redact_jsonl(
    in_path: str | Path,
    out_path: str | Path,
    fields: Sequence[str] | None = None,
    report_path: str | Path | None = None,
    config: RedactionConfig | None = None,
    *,
    rejects_path: str | Path | None = None,
    redactor: Redactor | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Redact every record of a JSONL file.

    Args:
        in_path: input file, one JSON object per line (blank lines are skipped).
        out_path: output file; records dropped by a ``drop_record`` operator are left out.
        fields: dotted key paths to redact ("messages.content", "chosen"); None: every string.
        report_path: where to write the report as JSON (optional).
        config: redaction settings; default: mask every entity type.
        rejects_path: where to list dropped records as ``{"line", "entity_types"}`` (optional).
        redactor: a prebuilt :class:`Redactor` (its config then wins over ``config``).
        progress: called with the number of records done after each batch.

    Returns:
        The report: record counts (``records``, ``records_changed``, ``records_dropped``),
        ``entities`` (count per entity type), ``operators``, ``examples`` (redacted snippets
        with line and field), ``seconds`` and ``records_per_second``.

    Raises:
        AyarError: the input cannot be read, an output path is the input or another output,
            or lines are not JSON objects (all such lines are listed as ``file:line``; no output
            is written).
    """
    in_path, out_path = Path(in_path), Path(out_path)
    redactor = redactor or Redactor(config)
    config = redactor.config
    if not in_path.is_file():
        raise AyarError(f"{in_path}: input file not found")
    check_distinct({"input": in_path}, {"output": out_path, "--report": report_path, "--rejects": rejects_path,
                                        "vault": config.vault_path})
    started = time.perf_counter()
    report = _Report(config.report_examples)
    problems: list[str] = []
    rejects: list[dict[str, Any]] = []

    with atomic_write(out_path) as out:
        batch: list[tuple[int, dict]] = []

        def flush() -> None:
            results = redactor.redact_records([record for _, record in batch], fields)
            for (line, _), result in zip(batch, results, strict=True):
                report.add(line, result.record, result.findings)
                if result.dropped:
                    rejects.append({"line": line, "entity_types": sorted({f.entity_type for f in result.findings})})
                else:
                    out.write(json.dumps(result.record, ensure_ascii=False) + "\n")
            batch.clear()
            if progress is not None:
                progress(report.records)

        try:
            with in_path.open(encoding="utf-8") as f:
                for line_no, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:  # the message never quotes the line's content
                        problems.append(f"{in_path}:{line_no}: invalid JSON ({exc.msg}, column {exc.colno})")
                        continue
                    if not isinstance(record, dict):
                        problems.append(f"{in_path}:{line_no}: expected a JSON object, found {type(record).__name__}")
                        continue
                    if problems:
                        continue  # keep reading only to report every bad line at once
                    batch.append((line_no, record))
                    if len(batch) >= config.batch_size:
                        flush()
        except UnicodeDecodeError as exc:
            raise AyarError(f"{in_path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
        if problems:
            listed = problems[:MAX_LISTED_PROBLEMS]
            more = len(problems) - len(listed)
            raise AyarError(f"{in_path}: {len(problems)} line(s) are not JSON objects; nothing was written:\n  "
                            + "\n  ".join(listed) + (f"\n  ... and {more} more" if more else ""))
        if batch:
            flush()
        vault_entries = redactor.save_vault()  # before the output is committed, never after
        if rejects_path is not None:
            with atomic_write(Path(rejects_path)) as f:
                f.writelines(json.dumps(r) + "\n" for r in rejects)

    seconds = time.perf_counter() - started
    summary = {
        "input": str(in_path),
        "output": str(out_path),
        "fields": list(fields) if fields is not None else None,
        "records": report.records,
        "records_changed": report.changed,
        "records_dropped": report.dropped,
        "entities": dict(sorted(report.entities.items())),
        "operators": {entity: config.operator_for(entity) for entity in config.entities},
        "examples": report.examples,
        "seconds": round(seconds, 3),
        "records_per_second": round(report.records / seconds, 1) if seconds > 0 else None,
        "vault_entries": vault_entries,
    }
    if report_path is not None:
        with atomic_write(Path(report_path)) as f:
            json.dump(summary, f, ensure_ascii=False, indent=2)
            f.write("\n")
    return summary
