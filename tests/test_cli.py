"""CLI commands that are thin wrappers: init, check, data redact."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError

runner = CliRunner()


def test_init_then_check(tmp_path):
    path = tmp_path / "recipe.yaml"
    assert runner.invoke(app, ["init", str(path)]).exit_code == 0
    result = runner.invoke(app, ["check", str(path), "--set", "adapter.r=8"])
    assert result.exit_code == 0 and "ok (sft, lora" in result.output
    # init never overwrites silently
    again = runner.invoke(app, ["init", str(path)])
    assert isinstance(again.exception, AyarError) and "already exists" in str(again.exception)


@pytest.mark.slow
def test_data_redact_masks_and_reports(tmp_path):
    src, dst, report = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "report.json"
    record = {"messages": [{"role": "user", "content": "Ben Ayşe Yılmaz, T.C. kimlik no 10000000146, "
                                                      "telefon 0532 123 45 67, e-posta ayse@ornek.com.tr"},
                           {"role": "assistant", "content": "Teşekkürler, kaydınızı aldık."}]}
    src.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["data", "redact", str(src), str(dst), "--report", str(report)])
    assert result.exit_code == 0, result.output
    out = dst.read_text(encoding="utf-8")
    for secret in ("10000000146", "0532 123 45 67", "ayse@ornek.com.tr", "Ayşe", "Yılmaz"):
        assert secret not in out and secret not in report.read_text(encoding="utf-8")
    assert "[TCKN]" in out and "[TELEFON]" in out and "[E_POSTA]" in out
    same = runner.invoke(app, ["data", "redact", str(src), str(src)])
    assert isinstance(same.exception, AyarError) and "would overwrite the input" in str(same.exception)


def test_python_dash_m_runs_the_same_cli():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ayar", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Usage:" in done.stdout and "train" in done.stdout
