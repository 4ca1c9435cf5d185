"""The whole prepare stage on demo tickets: rejects, counts, manifest hashes, and no personal data left."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from ayar.data.prepare import inspect_file, prepare
from ayar.data.prepare_config import PrepareSection
from ayar.data.read import read_conversations
from ayar.demo.tickets import ticket_records
from ayar.errors import AyarError
from ayar.govern.manifest import sha256_file

N_TICKETS = 120
USER = {"role": "user", "content": "Merhaba, TC kimlik numaram 10000000146."}
# Bad records, each holding personal data, inserted at these (1-based) lines of the source.
BAD_LINES = {
    5: (b'{"messages": [{"role": "user", "content": "TC 10000000146"', "not_json"),
    9: ('{"messages": [{"role": "user", "content": "ad\xfd"}]}'.encode("latin-1"), "not_utf8"),
    14: (json.dumps({"text": "Ayşe Yılmaz, 10000000146"}).encode(), "missing_field"),
    20: (json.dumps({"messages": [USER, {"role": "assistant", "content": " "}]}).encode(), "empty_assistant_turn"),
    27: (json.dumps({"messages": [USER, USER, {"role": "assistant", "content": "Tamam."}]}).encode(), "role_order"),
}
KNOWN_ORIGINALS = {"10000000146", "Ayşe Yılmaz"}


def known_values(records: list[dict]) -> set[str]:
    """Personal data in the tickets, found by their generator's patterns (not by the redactor)."""
    text = "\n".join(m["content"] for r in records for m in r["messages"])
    values = set(re.findall(r"(?<!\d)[1-9]\d{10}(?!\d)", text))  # TCKN
    values |= set(re.findall(r"TR\d\d(?: ?\d{4}){5} ?\d\d", text))  # IBAN
    values |= set(re.findall(r"[\w.+-]+@[\w.-]+\.(?:com|org|net)", text))  # e-mail
    values |= set(re.findall(r"\d{4} \d{4} \d{4} \d{4}", text))  # card
    for pattern in (r"Sayın (\w+ \w+), merhaba", r"Merhaba (\w+ \w+)\.", r"(?:ben|adım) (\w+ \w+)\."):
        values |= set(re.findall(pattern, text))  # full names
    return values


def write_source(path: Path, records: list[dict], bad: dict[int, tuple[bytes, str]]) -> None:
    lines, it = [], iter(records)
    for number in range(1, len(records) + len(bad) + 1):
        lines.append(bad[number][0] if number in bad else json.dumps(next(it), ensure_ascii=False).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prepare")
    tickets = ticket_records(N_TICKETS, seed=11)
    write_source(folder / "tickets.jsonl", tickets, BAD_LINES)
    section = PrepareSection(sources=[{"path": "tickets.jsonl"}], on_error="skip", output_dir="out",
                             pii={"operators": {"CREDIT_CARD": "drop_record"}})
    summary = prepare(section, folder, show_progress=False)
    return folder, folder / "out", summary, tickets


def rejects_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]


def test_every_bad_record_is_rejected_with_its_line_and_reason(run):
    _, out, summary, _ = run
    got = {r["line"]: r["reason"] for r in rejects_of(out) if r["stage"] == "validate"}
    assert got == {line: reason for line, (_, reason) in BAD_LINES.items()}
    assert all(set(r) >= {"source", "line", "stage", "reason", "detail"} for r in rejects_of(out))


def test_counts_add_up(run):
    _, out, summary, _ = run
    rejects = rejects_of(out)
    steps = {s["step"]: s["records"] for s in summary["steps"]}
    assert steps["read"] == N_TICKETS + len(BAD_LINES)
    assert steps["converted and valid"] == N_TICKETS
    written = {name: len((out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines())
               for name in ("train", "val", "test")}
    assert written == summary["split"]["sizes"]
    assert steps["read"] == sum(written.values()) + len(rejects) == summary["rejects"]["total"] + sum(written.values())
    by_reason = {}
    for r in rejects:
        by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    assert by_reason == summary["rejects"]["by_reason"]
    assert by_reason["exact_duplicate"] >= 1 and by_reason["near_duplicate"] >= 1 and by_reason["pii_drop_record"] >= 1
    assert summary["pii"]["records_dropped"] == by_reason["pii_drop_record"]
    assert summary["leakage"]["remaining"] == 0


def test_manifest_hashes_match_the_files(run):
    folder, out, summary, _ = run
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest == summary
    assert set(manifest["outputs"]) == {"train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "data_card.md"}
    for name, entry in manifest["outputs"].items():
        assert entry["sha256"] == sha256_file(out / name), name
    assert manifest["sources"][0]["sha256"] == sha256_file(folder / "tickets.jsonl")
    assert not list(out.glob(".*")), "temporary files left behind"


def test_no_original_personal_data_anywhere(run):
    _, out, summary, tickets = run
    originals = known_values(tickets) | KNOWN_ORIGINALS
    assert len(originals) > N_TICKETS
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "manifest.json", "data_card.md"):
        content = (out / name).read_text(encoding="utf-8")
        leaked = sorted(v for v in originals if v in content)
        assert not leaked, f"{name} holds {leaked[:5]}"
    assert summary["pii"]["by_entity"]["TCKN"] >= N_TICKETS / 3
    assert "[TCKN]" in (out / "train.jsonl").read_text(encoding="utf-8")


def test_outputs_are_valid_training_files(run):
    _, out, _, _ = run
    train = read_conversations(out / "train.jsonl")
    assert len(train) > N_TICKETS / 2
    first = json.loads((out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["meta"] == {"source": "tickets.jsonl", "line": 1}
    card = (out / "data_card.md").read_text(encoding="utf-8")
    for heading in ("## Sources", "## Records at every step", "## Personal data", "## Duplicates", "## Split"):
        assert heading in card


WORDS = ("kargo", "iade", "fatura", "şifre", "adres", "sipariş", "kart", "ödeme", "teslimat", "ürün", "indirim",
         "kampanya", "mağaza", "uygulama", "hesap", "abonelik", "paket", "kurye", "şube", "fiyat")


def _messages(i: int, customer: str | None = None, category: str | None = None, long: bool = False) -> dict:
    """A distinct small conversation (random words seeded by ``i``); ``long`` adds 300 characters."""
    rng = random.Random(i)
    question = " ".join(rng.choice(WORDS) for _ in range(10)) + (" uzun açıklama" * 20 if long else "")
    record = {"messages": [{"role": "user", "content": f"Soru {i}: {question}?"},
                           {"role": "assistant", "content": " ".join(rng.choice(WORDS) for _ in range(8)) + "."}]}
    if customer:
        record["customer_id"] = customer
    if category:
        record["category"] = category
    return record


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_fail_lists_every_bad_record_and_writes_nothing(tmp_path):
    write_source(tmp_path / "in.jsonl", [_messages(i) for i in range(30)], BAD_LINES)
    section = PrepareSection(sources=[{"path": "in.jsonl"}], pii=None, output_dir="out")
    with pytest.raises(AyarError) as caught:
        prepare(section, tmp_path, show_progress=False)
    message = str(caught.value)
    assert "5 unusable record(s)" in message and "on_error: skip" in message
    for line in BAD_LINES:
        assert f"in.jsonl:{line}:" in message
    assert "10000000146" not in message
    assert list((tmp_path / "out").iterdir()) == []


def test_groups_and_leakage_across_splits(tmp_path):
    """With dedup off, duplicates spread over splits are found and moved; one customer stays in one split."""
    records = [_messages(i, customer=f"c{i % 25}") for i in range(200)]
    records += [_messages(i) for i in range(0, 200, 10)]  # 20 exact copies, without a customer
    _write_jsonl(tmp_path / "in.jsonl", records)
    section = PrepareSection(sources=[{"path": "in.jsonl"}], pii=None, output_dir="out",
                             dedup={"exact": False, "near": False}, split={"group_key": "customer_id", "seed": 1})
    summary = prepare(section, tmp_path, show_progress=False)
    split_of_line = {}
    for name in ("train", "val", "test"):
        for row in (tmp_path / "out" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines():
            split_of_line[json.loads(row)["meta"]["line"]] = name
    customers: dict[str, set[str]] = {}
    for line, name in split_of_line.items():
        if line <= 200:
            customers.setdefault(records[line - 1]["customer_id"], set()).add(name)
    assert all(len(s) == 1 for s in customers.values())
    texts: dict[str, set[str]] = {}
    for line, name in split_of_line.items():
        texts.setdefault(json.dumps(records[line - 1]["messages"]), set()).add(name)
    assert all(len(s) == 1 for s in texts.values())  # no record text in two splits
    assert summary["leakage"]["pairs_found"] > 0 and summary["leakage"]["remaining"] == 0
    assert summary["split"]["groups"]["test"] >= 1


def test_stratify_weight_sample_and_length(tmp_path):
    many = [_messages(i, category="kargo" if i % 5 else "iade", long=i % 4 == 0) for i in range(300)]
    _write_jsonl(tmp_path / "a.jsonl", many)
    _write_jsonl(tmp_path / "b.jsonl", [_messages(1000 + i) for i in range(50)])
    section = PrepareSection(
        sources=[{"path": "a.jsonl", "weight": 2}, {"path": "b.jsonl", "sample_size": 20}],
        pii=None, output_dir="out", length={"max": 300}, split={"stratify_key": "category"})
    summary = prepare(section, tmp_path, show_progress=False)
    too_long = summary["rejects"]["by_reason"]["too_long"]
    assert too_long == 75 and summary["rejects"]["by_reason"]["sampled_out"] == 50 - 20
    for name in ("train", "val", "test"):
        rows = (tmp_path / "out" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        metas = [json.loads(row)["meta"] for row in rows]
        from_a = [m["line"] for m in metas if m["source"] == "a.jsonl"]
        copies = 2 if name == "train" else 1  # weight 2: each training record of a.jsonl is written twice
        assert len(from_a) == copies * len(set(from_a)) > 0
        assert summary["split"]["sizes"][name] == len(rows)
    strata = summary["split"]["strata"]
    for counts in strata.values():
        total = sum(counts.values())
        assert counts["test"] == pytest.approx(0.1 * total, abs=2)


def test_refuses_to_overwrite_a_source_and_mixed_kinds(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [_messages(i) for i in range(5)])
    with pytest.raises(AyarError, match="would overwrite the source"):
        prepare(PrepareSection(sources=[{"path": "train.jsonl"}], pii=None, output_dir="."), tmp_path)
    _write_jsonl(tmp_path / "t.jsonl", [{"text": "bir belge"}])
    with pytest.raises(AyarError, match="different kinds"):
        prepare(PrepareSection(sources=[{"path": "train.jsonl"}, {"path": "t.jsonl"}], pii=None), tmp_path)


def test_inspect_writes_nothing(run, tmp_path, monkeypatch):
    folder, _, _, _ = run
    source = tmp_path / "tickets.jsonl"
    source.write_bytes((folder / "tickets.jsonl").read_bytes())
    monkeypatch.chdir(tmp_path)

    def snapshot():
        return sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.rglob("*"))

    before = snapshot()
    report = inspect_file(source, pii_records=40)
    assert snapshot() == before
    assert report["format"] == "messages" and report["records"] == N_TICKETS + len(BAD_LINES)
    assert report["valid"] == N_TICKETS
    assert report["invalid"]["not_json"] == 1
    assert report["problems"][0].startswith("tickets.jsonl:5: not valid JSON")
    assert report["pii"]["records_scanned"] == 40 and report["pii"]["by_entity"]["TCKN"] > 5
    assert 0 < report["duplicates"]["rate"] < 0.3
    assert report["length"]["unit"] == "chars" and report["length"]["min"] > 50


def test_preference_pairs_made_identical_by_redaction_are_rejected(run, tmp_path):
    rows = [{"prompt": f"Soru {i}: " + " ".join(random.Random(i).choice(WORDS) for _ in range(8)),
             "chosen": f"Evet, {i} numaralı talebiniz işlendi.", "rejected": f"Hayır {i}."} for i in range(12)]
    rows.append({"prompt": "Talebimi kim iletti?", "chosen": "Ayşe Yılmaz iletti.", "rejected": "Mehmet Kaya iletti."})
    _write_jsonl(tmp_path / "pairs.jsonl", rows)
    section = PrepareSection(sources=[{"path": "pairs.jsonl"}], output_dir="out", split={"val": 0, "test": 0.2})
    summary = prepare(section, tmp_path, show_progress=False)
    assert summary["kind"] == "preference"
    assert rejects_of(tmp_path / "out") == [{"source": "pairs.jsonl", "line": 13, "stage": "pii",
                                             "reason": "identical_pair",
                                             "detail": "after redaction: chosen and rejected are the same text"}]
    first = json.loads((tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected", "meta"} and first["chosen"][0]["role"] == "assistant"
    assert summary["split"]["sizes"]["val"] == 0 and not any("val" in w for w in summary["warnings"])
