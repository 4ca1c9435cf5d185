"""The audit ledger: an intact chain verifies; every kind of tampering is detected and located; concurrent
appends from several processes keep one chain; signatures stop a rewritten chain."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest
from typer.testing import CliRunner

from ayar.errors import AyarError
from ayar.govern.ledger import (
    GENESIS,
    Ledger,
    canonical,
    entry_hash,
    generate_key,
    load_private_key,
    load_public_key,
    ref,
    verify,
)


@pytest.fixture
def book(tmp_path):
    """A ledger of five entries; entry 1 references a data file that still exists."""
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "merhaba"}\n', encoding="utf-8")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    for i in range(5):
        ledger.append("step", {"i": i}, outputs={"data": ref(data)} if i == 1 else None)
    return ledger, data


def lines(ledger):
    return ledger.path.read_text(encoding="utf-8").splitlines(keepends=True)


def write(ledger, rows):
    ledger.path.write_text("".join(rows), encoding="utf-8")


def test_intact_chain_verifies_and_links_by_hash(book):
    ledger, _ = book
    result = verify(ledger)
    assert result.ok and result.entries == 5 and result.files_checked == 1
    entries = ledger.entries()
    assert [e["seq"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:], strict=False):
        assert after["prev"] == before["hash"]
    # the hash is sha256 of the canonical JSON without hash/sig/signer, recomputed here independently
    body = {k: v for k, v in entries[3].items() if k != "hash"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                              .encode()).hexdigest()
    assert entries[3]["hash"] == expected == entry_hash(entries[3])


def test_edited_entry_is_detected(book):
    ledger, _ = book
    rows = lines(ledger)
    rows[2] = rows[2].replace('"i": 2', '"i": 7')
    write(ledger, rows)
    result = verify(ledger)
    assert not result.ok
    assert result.problems[0].startswith("entry 2 (line 3): content changed")


def test_edited_entry_with_recomputed_hash_breaks_the_next_link(book):
    ledger, _ = book
    rows = lines(ledger)
    entry = json.loads(rows[2])
    entry["data"]["i"] = 7
    entry["hash"] = entry_hash(entry)  # a careful forger re-hashes the entry ...
    rows[2] = json.dumps(entry) + "\n"
    write(ledger, rows)
    result = verify(ledger)
    assert not result.ok  # ... but entry 3 still points at the old hash
    assert result.problems[0].startswith("entry 3 (line 4): does not follow")


def test_deleted_entry_is_detected(book):
    ledger, _ = book
    rows = lines(ledger)
    del rows[2]
    write(ledger, rows)
    result = verify(ledger)
    assert "entry 3 (line 3): expected entry 2 here" in result.problems[0]


def test_reordered_entries_are_detected(book):
    ledger, _ = book
    rows = lines(ledger)
    rows[1], rows[2] = rows[2], rows[1]
    write(ledger, rows)
    result = verify(ledger)
    assert "entry 2 (line 2): expected entry 1 here" in result.problems[0]


def test_truncated_ledger_is_detected_by_the_head(book):
    ledger, _ = book
    write(ledger, lines(ledger)[:3])  # a valid chain of three entries, but the head says five
    result = verify(ledger)
    assert not result.ok
    assert "ends at entry 2, but its head records entry 4" in result.problems[0]


def test_line_cut_in_the_middle_is_detected_and_blocks_appends(book):
    ledger, _ = book
    rows = lines(ledger)
    write(ledger, rows[:4] + [rows[4][:40]])
    result = verify(ledger)
    assert result.problems == ["line 5: not a ledger entry (cut short or edited); the chain cannot be checked past it"]
    with pytest.raises(AyarError, match="last line is not a complete ledger entry"):
        ledger.append("step", {"i": 5})


def test_changed_referenced_file_is_detected(book):
    ledger, data = book
    data.write_text('{"text": "başka"}\n', encoding="utf-8")
    result = verify(ledger)
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"entry 1: {data.resolve()} changed since it was recorded")
    assert verify(ledger, check_files=False).ok


def test_file_replaced_by_a_later_recorded_stage_is_superseded_not_changed(book):
    ledger, data = book
    data.write_text('{"text": "yeni"}\n', encoding="utf-8")
    ledger.append("step", {"i": 5}, outputs={"data": ref(data)})  # e.g. prepare ran again into the same folder
    result = verify(ledger)
    assert result.ok and result.files_superseded == 1


def test_missing_head_is_reported(book):
    ledger, _ = book
    ledger.head_path.unlink()
    assert "missing or unreadable" in verify(ledger).problems[0]


def _append_many(path: str, worker: int, count: int) -> None:
    ledger = Ledger(path)
    for i in range(count):
        ledger.append("concurrent", {"worker": worker, "i": i})


def test_concurrent_appends_from_processes_keep_one_chain(tmp_path):
    path = str(tmp_path / "ledger.jsonl")
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no lock state is inherited
    workers = [context.Process(target=_append_many, args=(path, w, 20)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert all(p.exitcode == 0 for p in workers)
    ledger = Ledger(path)
    result = verify(ledger)
    assert result.ok, result.problems
    entries = ledger.entries()
    assert [e["seq"] for e in entries] == list(range(80))
    assert sorted((e["data"]["worker"], e["data"]["i"]) for e in entries) == [(w, i) for w in range(4)
                                                                              for i in range(20)]
    for w in range(4):  # each process's own appends stay in its order
        mine = [e["data"]["i"] for e in entries if e["data"]["worker"] == w]
        assert mine == list(range(20))


def test_signed_chain_verifies_and_a_rewritten_chain_does_not(tmp_path):
    key_path, public_path = generate_key(tmp_path / "ledger.key")
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    ledger = Ledger(tmp_path / "ledger.jsonl", load_private_key(key_path))
    for i in range(3):
        ledger.append("step", {"i": i})
    public = load_public_key(public_path)
    result = verify(ledger, public_key=public)
    assert result.ok and result.signed == 3

    # Rewrite the whole chain consistently (edit, re-hash, re-link, new head) without the key.
    forged, prev = [], GENESIS
    for entry in ledger.entries():
        entry["data"]["i"] += 100
        entry["prev"] = prev
        entry["hash"] = prev = entry_hash(entry)
        forged.append(json.dumps(entry) + "\n")
    write(ledger, forged)
    head = {"seq": 2, "hash": prev}
    ledger.head_path.write_text(json.dumps({**head, "sig": json.loads(ledger.head_path.read_text())["sig"]}))
    assert verify(ledger).ok  # the chain alone cannot tell ...
    result = verify(ledger, public_key=public)
    assert not result.ok  # ... the signatures can
    assert "signature does not match" in result.problems[0]
    assert canonical(head) == b'{"hash":"' + prev.encode() + b'","seq":2}'


def test_unsigned_entry_fails_when_a_key_is_required(tmp_path):
    _, public_path = generate_key(tmp_path / "k")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    ledger.append("step", {})
    assert "not signed" in verify(ledger, public_key=load_public_key(public_path)).problems[0]


def test_cli_verify_exits_nonzero_on_tampering(book):
    from ayar.cli import app

    ledger, _ = book
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", "--ledger", str(ledger.path)])
    assert ok.exit_code == 0 and "5 entries" in ok.output and "ok: the chain is intact" in ok.output
    rows = lines(ledger)
    write(ledger, rows[:2] + rows[3:])
    broken = runner.invoke(app, ["audit", "verify", "--ledger", str(ledger.path)])
    assert broken.exit_code == 1
    assert "BROKEN: entry 3 (line 3): expected entry 2 here" in broken.output
