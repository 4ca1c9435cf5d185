"""`ayar serve` on a tiny random model as the teacher of `ayar synth` (a real uvicorn server on loopback)."""

from __future__ import annotations

import json

import pytest
from synth_fake import write_jsonl

from ayar.synth.config import SynthSection
from ayar.synth.run import synthesize

pytestmark = pytest.mark.slow


def test_ayar_serve_as_the_teacher(tmp_path, tiny_llama):
    from ayar.serve.launch import ServeOptions
    from serve.serve_helpers import running_server

    write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"Ürün: {c} renkli güzel bir masa"} for c in ("mavi", "sarı")])
    options = ServeOptions(target=str(tiny_llama), dtype="fp32", ab_log=tmp_path / "ab.jsonl")
    with running_server(options) as server:
        section = SynthSection.model_validate({
            "teacher": {"base_url": f"{server.url}/v1", "model": "llama", "api_key_env": None, "temperature": 0,
                        "max_tokens": 8},
            "task": "answer", "input": "in.jsonl", "output_dir": "out",
            "quality": {"min_chars": 0}, "privacy": {"redact_outputs": False}})
        first = synthesize(section, tmp_path, show_progress=False)
        second = synthesize(section, tmp_path, show_progress=False)
    assert first["requests"]["answered_now"] == 2 and first["teacher"]["local"] is True
    assert first["usage"]["prompt_tokens"] > 0 and 0 < first["usage"]["completion_tokens"] <= 16
    assert first["usage"]["price"] == {"source": "none"} and first["usage"]["estimated_cost"] is None
    assert second["requests"] == {**second["requests"], "cached": 2, "http_attempts": 0}
    records = [json.loads(x) for x in (tmp_path / "out" / "synthetic.jsonl").read_text().splitlines()]
    assert len(records) + first["rejects"]["total"] == 2
