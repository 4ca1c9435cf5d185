"""The request log's retention and redaction, and `ayar ab report` / `export-data` on a written log."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from ayar.errors import AyarError
from ayar.serve.feedback import ab_report, export_data, render_report
from ayar.serve.request_log import RequestLog, redact_record


def upper(texts: list[str]) -> list[str]:  # a stand-in redactor whose effect is easy to see
    return [t.upper() for t in texts]


def test_redact_record_touches_every_text_field():
    record = {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "reply": "r",
              "correction": "c", "comment": None, "served_by": "a"}
    out = redact_record(record, upper)
    assert out["prompt"] == [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert (out["reply"], out["correction"], out["comment"], out["served_by"]) == ("R", "C", None, "a")
    assert redact_record({"prompt": "raw"}, upper)["prompt"] == "RAW"


def test_retention_prunes_old_records_and_keeps_foreign_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    now = dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)
    lines = [json.dumps({"kind": "request", "id": "old", "time": (now - dt.timedelta(days=8)).isoformat()}),
             json.dumps({"kind": "request", "id": "new", "time": (now - dt.timedelta(days=6)).isoformat()}),
             "not json at all"]
    path.write_text("\n".join(lines) + "\n")
    log = RequestLog(path, retention_days=7, redact=upper)
    assert log.prune(now) == 1
    kept = path.read_text().splitlines()
    assert len(kept) == 2 and '"new"' in kept[0] and kept[1] == "not json at all"
    with pytest.raises(AyarError, match="positive"):
        RequestLog(path, retention_days=0)
    with pytest.raises(AyarError, match="is a folder"):
        RequestLog(tmp_path)


def test_the_log_thread_redacts_before_writing(tmp_path):
    log = RequestLog(tmp_path / "sub" / "log.jsonl", redact=upper)
    log.start()
    log.request({"id": "r1", "model": "m", "served_by": "m", "route": None, "prompt": "gizli", "reply": "yanıt"})
    log.feedback({"id": "r1", "model": "m", "served_by": "m", "route": None, "thumbs": "up", "correction": "düzelt"})
    log.close()
    records = [json.loads(line) for line in (tmp_path / "sub" / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["request", "feedback"]
    assert records[0]["prompt"] == "GIZLI" and records[1]["correction"] == "DÜZELT" and "time" in records[0]


def write_log(path, arms: dict[str, tuple[int, int, int]]) -> None:
    """arm -> (requests, thumbs up, thumbs down) on route ``r``; the first up also carries a correction."""
    lines = []
    for arm, (n, up, down) in arms.items():
        for i in range(n):
            rid = f"{arm}-{i}"
            lines.append({"kind": "request", "id": rid, "model": "r", "route": "r", "served_by": arm,
                          "prompt": [{"role": "user", "content": f"soru {i}"}], "reply": f"yanıt {i}"})
            if i < up + down:
                lines.append({"kind": "feedback", "id": rid, "model": "r", "route": "r", "served_by": arm,
                              "thumbs": "up" if i < up else "down", "score": None,
                              "correction": "doğrusu" if i == 0 else None})
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def test_ab_report_by_hand(tmp_path):
    path = tmp_path / "log.jsonl"
    write_log(path, {"v1": (120, 40, 60), "v2": (110, 60, 40)})
    report = ab_report(path)
    (route,) = report["routes"]
    v1, v2 = route["arms"]
    assert (v1["arm"], v1["requests"], v1["up"], v1["down"], v1["corrections"]) == ("v1", 120, 40, 60, 1)
    assert v1["up_rate"] == pytest.approx(0.4) and v2["up_rate"] == pytest.approx(0.6)
    assert v1["up_rate_ci95"] == pytest.approx([0.30940, 0.49800], abs=1e-5)  # Wilson, 40/100: centre 0.40370, half 0.09430
    (comparison,) = route["comparisons"]
    assert comparison["z"] == pytest.approx(2.828427, abs=1e-5) and comparison["significant"]
    assert comparison["p_value"] == pytest.approx(0.0046777, abs=1e-6)
    text = render_report(report)
    assert "v2 vs v1" in text and "significant at alpha 0.05" in text and "not significant" not in text


def test_small_differences_are_not_significant(tmp_path):
    path = tmp_path / "log.jsonl"
    write_log(path, {"v1": (20, 5, 5), "v2": (20, 6, 4), "v3": (20, 0, 0)})
    route = ab_report(path)["routes"][0]
    c2, c3 = route["comparisons"]
    assert not c2["significant"] and c2["alpha"] == pytest.approx(0.025)  # Bonferroni over two comparisons
    assert c3["p_value"] is None and "not testable" in c3["note"]


def test_export_data_rows_load_as_sft_and_kto(tmp_path):
    from ayar.data.formats import convert

    path = tmp_path / "log.jsonl"
    write_log(path, {"v1": (4, 1, 2)})
    result = export_data(path, tmp_path / "out")
    assert (result["sft"], result["kto"], result["skipped"]) == (1, 3, 0)
    sft = [json.loads(x) for x in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    kto = [json.loads(x) for x in (tmp_path / "out" / "kto.jsonl").read_text().splitlines()]
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": "doğrusu"}
    assert [row["label"] for row in kto] == [True, False, False]
    for i, row in enumerate(sft):
        convert(row, "messages", "sft.jsonl", i + 1)  # the prepare stage reads them
    for i, row in enumerate(kto):
        convert(row, "kto", "kto.jsonl", i + 1)
    with pytest.raises(AyarError, match="nothing to export"):
        export_data(path, tmp_path / "none", route="another")


def test_cli_bad_logs_exit_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "request", "id": "x"}\nnot json\n')
    for args in (["ab", "report", str(tmp_path / "missing.jsonl")], ["ab", "report", str(bad)],
                 ["ab", "export-data", str(bad), "--out", str(tmp_path / "o")]):
        done = subprocess.run([sys.executable, "-m", "ayar.cli", *args], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "error:" in done.stderr
    assert "bad.jsonl:2" in done.stderr


class _IdleEngine:
    """Just enough of an engine for the routes that never generate."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def pending(self) -> int:
        return 0


def test_feedback_is_off_without_a_request_log_and_metrics_need_the_key():
    from fastapi.testclient import TestClient

    from ayar.serve.app import create_app

    app = create_app(host=None, engine=_IdleEngine(), api_key="k-1", admin=False)
    with TestClient(app) as client:
        auth = {"Authorization": "Bearer k-1"}
        off = client.post("/v1/feedback", json={"response_id": "x", "thumbs": "up"}, headers=auth)
        assert off.status_code == 404 and off.json()["error"]["code"] == "feedback_off"
        assert client.get("/metrics").status_code == 401
        assert "ayar_queue_depth 0.0" in client.get("/metrics", headers=auth).text

