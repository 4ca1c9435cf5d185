"""Readers: every container gives the same records, numbered by line or row, bad ones as errors."""

from __future__ import annotations

import csv
import json

import pytest

from ayar.data.formats import RecordError
from ayar.data.prepare_config import SourceConfig
from ayar.data.readers import container_of, iter_records, location, open_source
from ayar.errors import DataError

ROWS = [
    {"instruction": "Kargom nerede?", "input": "", "output": "Yarın teslim edilecek."},
    {"instruction": "Özetle", "input": "Çok satırlı\nbir metin, virgüllü \"tırnaklı\"", "output": "Kısa."},
    {"instruction": "İade", "input": "", "output": "Üç iş günü içinde."},
]


def _write_csv(path, rows, delimiter=","):
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def _write(tmp_path, container):
    if container == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    elif container == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif container in ("csv", "tsv"):
        path = tmp_path / f"d.{container}"
        _write_csv(path, ROWS, "\t" if container == "tsv" else ",")
    elif container == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        from datasets import Dataset

        path = tmp_path / "saved"
        Dataset.from_list(ROWS).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("container", ["jsonl", "json", "csv", "tsv", "parquet", "datasets"])
def test_every_container_reads_the_same_records(tmp_path, container):
    path = _write(tmp_path, container)
    assert container_of(path) == container
    rows = list(iter_records(path))
    assert [r for _, r in rows] == ROWS
    source = open_source(SourceConfig(path=str(path)), tmp_path)
    assert source.format == "alpaca" and source.detected


def test_csv_numbers_are_lines_even_with_multiline_cells(tmp_path):
    path = _write(tmp_path, "csv")
    numbers = [n for n, _ in iter_records(path)]
    assert numbers == [2, 3, 5]  # the second row's cell spans lines 3-4
    assert location("d.csv", "csv", 5) == "d.csv:5"
    assert location("d.parquet", "parquet", 5) == "d.parquet row 5"


def test_jsonl_bad_lines_become_errors_with_their_line(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(ROWS[0]).encode(), b"", b"{not json", b'["a list"]', b'{"text": "caf\xe9"}',
             json.dumps(ROWS[2]).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    got = {n: (r.code if isinstance(r, RecordError) else "ok") for n, r in iter_records(path)}
    assert got == {1: "ok", 3: "not_json", 4: "not_object", 5: "not_utf8", 6: "ok"}  # line 2 is blank


def test_csv_bad_rows_become_errors(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"instruction,input,output\na,,b\nonly-two,cells\nc,\xff,d\n")
    got = {n: (r.code if isinstance(r, RecordError) else "ok") for n, r in iter_records(path)}
    assert got == {2: "ok", 3: "bad_row", 4: "not_utf8"}


def test_whole_file_problems_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        container_of(tmp_path / "missing.jsonl")
    (tmp_path / "d.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        container_of(tmp_path / "d.xlsx")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": "a"},\n {"text": }]', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json:2: not valid JSON"):
        list(iter_records(bad))
    unknown = tmp_path / "u.jsonl"
    unknown.write_text('{"soru": "a", "cevap": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot tell the format from 2 field\(s\): 2 unrecognised field\(s\) at "
                                        r"position\(s\) 1, 2"):
        open_source(SourceConfig(path=str(unknown)), tmp_path)
    assert open_source(SourceConfig(path=str(unknown), columns={"prompt": "soru", "completion": "cevap"}),
                       tmp_path).format == "prompt_completion"


def test_a_json_file_of_objects_per_line_is_jsonl(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    assert container_of(path) == "jsonl"
