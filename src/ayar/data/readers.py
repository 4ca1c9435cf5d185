"""Reading raw data files one record at a time, whatever their container.

Supported: JSONL, a JSON array, CSV and TSV (header row), Parquet, and a folder
written by ``datasets.Dataset.save_to_disk``. Every reader is a generator of
``(number, record)``: ``number`` is the 1-based line (JSONL, CSV, TSV) or row
(JSON array, Parquet, datasets folder), and ``record`` is a dict, or a
:class:`~ayar.data.formats.RecordError` for a record that cannot even be read
(not UTF-8, not JSON, wrong number of CSV cells), so a caller can skip it and
go on. Problems with the whole file raise :class:`~ayar.errors.DataError`.

Parquet and ``datasets`` folders are read in Arrow batches of ``BATCH_ROWS``
rows (memory-mapped), JSONL and CSV line by line: memory does not grow with the
file. A JSON array has to be parsed whole; use JSONL for very large data.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.data.formats import KIND_OF_FORMAT, KNOWN_FIELDS, RecordError, apply_columns, detect_format
from ayar.data.prepare_config import SourceConfig
from ayar.errors import AyarError, DataError

BATCH_ROWS = 1024
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # Python's default (128 KiB) is too small for long documents

Row = tuple[int, dict[str, Any] | RecordError]

CONTAINERS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet", ".pq": "parquet"}


def container_of(path: str | Path) -> str:
    """"jsonl", "json" (an array), "csv", "tsv", "parquet" or "datasets" (a save_to_disk folder).

    A ``.json`` file whose first character is ``{`` is read as JSONL.

    Raises:
        DataError: the path does not exist or its kind is not supported.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            splits = sorted(p.name for p in path.iterdir() if p.is_dir())
            raise DataError(str(path), None, f"a DatasetDict with splits {', '.join(splits)}",
                            f"point the source at one split folder, e.g. {path / splits[0]}" if splits else "")
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            return "datasets"
        raise DataError(str(path), None, "a folder, but not one written by datasets' save_to_disk")
    if not path.is_file():
        raise DataError(str(path), None, "file not found", "check the source path in the recipe")
    kind = CONTAINERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(str(path), None, f"unsupported file type {path.suffix!r}",
                        "use .jsonl, .json, .csv, .tsv, .parquet or a save_to_disk folder")
    if kind == "json" and _first_char(path) == "{":
        return "jsonl"
    return kind


def unit_of(container: str) -> str:
    """"line" where record numbers are file lines, else "row"."""
    return "line" if container in ("jsonl", "csv", "tsv") else "row"


def location(path: str | Path, container: str, number: int | None) -> str:
    """``file:12`` for a line, ``file row 12`` for a row (what error messages and the card show)."""
    if number is None:
        return str(path)
    return f"{path}:{number}" if unit_of(container) == "line" else f"{path} row {number}"


def iter_records(path: str | Path, container: str | None = None) -> Iterator[Row]:
    """``(number, dict or RecordError)`` for every record of ``path``; see the module docstring.

    Raises:
        DataError: the file is missing, unsupported, or cannot be parsed as a whole.
    """
    path = Path(path)
    container = container or container_of(path)
    if container in ("csv", "tsv"):
        return _csv(path, "\t" if container == "tsv" else ",")
    readers = {"jsonl": _jsonl, "json": _json_array, "parquet": _parquet, "datasets": _datasets}
    return readers[container](path)


def _first_char(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1].decode("ascii", "replace")


def _jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield number, RecordError("not_utf8", f"not valid UTF-8 (byte {exc.start} of the line); "
                                                      "re-save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:  # the message never quotes the line's content
                yield number, RecordError("not_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(obj, dict):
                yield number, RecordError("not_object", f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield number, obj


def _json_array(path: Path) -> Iterator[Row]:
    try:
        with path.open(encoding="utf-8-sig") as fh:
            data = json.load(fh)
    except UnicodeDecodeError as exc:
        raise DataError(str(path), None, f"not valid UTF-8 (byte {exc.start})", "re-save the file as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(str(path), exc.lineno, f"not valid JSON: {exc.msg} at column {exc.colno}",
                        "a JSON file must hold one array of objects; fix it or convert it to JSONL") from None
    if not isinstance(data, list):
        raise DataError(str(path), None, f"expected a JSON array of objects, got {type(data).__name__}")
    for number, obj in enumerate(data, start=1):
        if isinstance(obj, dict):
            yield number, obj
        else:
            yield number, RecordError("not_object", f"expected a JSON object, got {type(obj).__name__}")


def _csv(path: Path, delimiter: str = ",") -> Iterator[Row]:
    old_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        # surrogateescape: an invalid byte becomes a lone surrogate, found below, instead of an exception
        # that would end the whole file.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            if len(set(header)) != len(header) or any(_has_surrogate(h) for h in header):
                raise DataError(str(path), 1, "the header row has repeated or non-UTF-8 column names")
            start = reader.line_num + 1
            for cells in reader:
                yield start, _csv_row(header, cells)
                start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(str(path), None, f"not a readable {'TSV' if delimiter == chr(9) else 'CSV'} file: {exc}"
                        ) from None
    finally:
        csv.field_size_limit(old_limit)


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any] | RecordError:
    if not cells:
        return RecordError("bad_row", "empty row")
    if len(cells) != len(header):
        return RecordError("bad_row", f"{len(cells)} cells, but the header has {len(header)} columns")
    if any(_has_surrogate(c) for c in cells):
        return RecordError("not_utf8", "not valid UTF-8; re-save the file as UTF-8")
    return dict(zip(header, cells, strict=True))


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _parquet(path: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        yield from _arrow_rows(batches)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(str(path), None, f"not a readable Parquet file: {exc}") from None


def _datasets(path: Path) -> Iterator[Row]:
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as exc:
        raise DataError(str(path), None, f"cannot load the datasets folder: {exc}") from None
    # Arrow batches of the memory-mapped table: no Python copy of the whole dataset.
    yield from _arrow_rows(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))


def _arrow_rows(batches) -> Iterator[Row]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield number, row


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    """A source file as resolved: where it is, how it is stored, its format and display name."""

    config: SourceConfig
    path: Path
    name: str
    container: str
    format: str
    detected: bool

    @property
    def unit(self) -> str:
        return unit_of(self.container)

    def where(self, number: int | None) -> str:
        return location(self.name, self.container, number)


def resolve_path(path: str, base_dir: Path) -> Path:
    """``path`` made absolute against ``base_dir`` (the recipe's folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def open_source(config: SourceConfig, base_dir: Path) -> Source:
    """Resolve a source and detect its format from its first readable record.

    Raises:
        DataError: missing or unsupported file, no readable record, or fields that fit no format.
    """
    path = resolve_path(config.path, base_dir)
    container = container_of(path)
    try:
        name = str(path.relative_to(base_dir.resolve()))
    except ValueError:
        name = str(path)
    if config.format != "auto":
        return Source(config, path, name, container, config.format, detected=False)
    for number, raw in iter_records(path, container):
        if isinstance(raw, RecordError):
            continue
        fmt = detect_format(apply_columns(raw, config.columns))
        if fmt is None:
            line, row = (number, "") if unit_of(container) == "line" else (None, f"row {number}: ")
            header = " (a CSV/TSV file needs a header row naming its columns)" if container in ("csv", "tsv") else ""
            raise DataError(str(path), line, f"{row}cannot tell the format from {describe_fields(raw, config.columns)}"
                            f"{header}", "set `format:` (messages, sharegpt, alpaca, prompt_completion, preference, "
                            "kto, text) and `columns:` for this source")
        return Source(config, path, name, container, fmt, detected=True)
    raise DataError(str(path), None, "no readable record", "check the file is not empty and is UTF-8 JSON/CSV")


def describe_fields(raw: dict[str, Any], columns: dict[str, str]) -> str:
    """The fields of a record for an error message: known names, and the others only counted by position.

    An unrecognised field name may be a value (the first row of a CSV without a header), so it is never quoted.
    """
    known = KNOWN_FIELDS | set(columns.values()) | set(columns)
    names = [str(k) for k in raw]
    shown = [n for n in names if n in known]
    hidden = [str(i) for i, n in enumerate(names, start=1) if n not in known]
    parts = [f"known field(s) {', '.join(shown)}"] if shown else []
    if hidden:
        parts.append(f"{len(hidden)} unrecognised field(s) at position(s) {', '.join(hidden)}")
    return f"{len(names)} field(s): " + ("; ".join(parts) if parts else "none")


def common_kind(sources: list[Source]) -> str:
    """The kind of record ("conversation", ...) every source gives.

    Raises:
        AyarError: sources give different kinds.
    """
    kinds = {KIND_OF_FORMAT[s.format] for s in sources}
    if len(kinds) > 1:
        listed = ", ".join(f"{s.name}: {s.format} ({KIND_OF_FORMAT[s.format]})" for s in sources)
        raise AyarError(f"prepare.sources give different kinds of records ({listed}); a dataset holds one kind: "
                        "prepare each kind with its own recipe or output_dir")
    return kinds.pop()
