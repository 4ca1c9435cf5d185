"""The prepare stage as a sequence of stage functions, each returning its result and its counts."""

from __future__ import annotations

import io

from ayar.data.card import Rejects
from ayar.data.clean import LengthFilter
from ayar.data.prepare import Run, ingest, plan_canaries, plan_splits, prepare
from ayar.data.prepare_config import PrepareSection
from ayar.data.readers import open_source
from ayar.data.redaction import Redaction
from ayar.govern.subject import SubjectCollector
from helpers import write_jsonl


def _conversation(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_each_stage_returns_its_counts_and_prepare_reports_them_in_order(tmp_path):
    # 12 records: line 3 has no assistant reply (invalid), line 6 one of invisible characters only (cleaned out), line 9 repeats
    # line 1 word for word (an exact duplicate), the other 9 are distinct.
    records = [_conversation(f"{i}. soru: sipariş {i} ne zaman gelir?", f"Sipariş {i}, {i + 2} gün içinde.")
               for i in range(12)]
    records[2] = {"messages": [{"role": "user", "content": "yanıtsız"}]}
    records[5] = _conversation("görünmez yanıt", "\u200b\u200b")  # empty once invisible characters go
    records[8] = records[0]
    write_jsonl(tmp_path / "d.jsonl", records)
    section = PrepareSection(sources=[{"path": "d.jsonl"}], pii=None, on_error="skip", output_dir="out",
                             dedup={"near": False}, split={"train": 0.5, "val": 0.25, "test": 0.25},
                             canaries={"count": 1, "repeats": 2})
    sources = [open_source(s, tmp_path) for s in section.sources]
    run = Run(section, sources, "conversation", workers=1, show_progress=False)
    spill, rejected = io.StringIO(), io.StringIO()
    rejects = Rejects(rejected, sources)

    ingested = ingest(run, LengthFilter(section.length, tmp_path), Redaction(None), SubjectCollector.from_pii(None),
                      rejects, spill)
    assert ingested.steps == [("read", 12), ("converted and valid", 11), ("cleaned, within length limits", 10),
                              ("after PII redaction (drop_record)", 10)]
    assert len(ingested.table) == 10 and len(spill.getvalue().splitlines()) == 10
    assert [row.count('"stage"') for row in rejected.getvalue().splitlines()] == [1, 1]

    plan = plan_splits(run, ingested.table)
    assert plan.steps == [("after exact dedup", 9), ("after near dedup", 9), ("after sampling", 9),
                          ("after leakage resolution", 9)]
    assert len(plan.assignment) == 9 and plan.removed == {6: (0, "exact")}  # work-file lines: 9th record, 1st

    canaries = plan_canaries(run, ingested.table, plan.assignment)
    assert len(canaries.carriers) == 2 and set(canaries.carriers.values()) == {0}
    assert all(plan.assignment[i] == "train" for i in canaries.carriers)

    summary = prepare(section, tmp_path, show_progress=False)
    assert [(s["step"], s["records"]) for s in summary["steps"]] == [
        *ingested.steps, *plan.steps, ("written (distinct records)", 9)]
    assert summary["canaries"]["records"] == canaries.manifest["records"]
