"""Personal data and the teacher: never sent to a non-local teacher unless the recipe allows it; the teacher's
replies are redacted like any other data. (Presidio's analyzer takes seconds to build: marked slow.)"""

from __future__ import annotations

import json

import pytest
from synth_fake import FakeTeacher, teacher, user_text, write_jsonl

from ayar.errors import AyarError
from ayar.govern.config import GovernanceSection
from ayar.synth.config import SynthSection
from ayar.synth.run import synthesize

pytestmark = pytest.mark.slow

TCKN, PHONE = "10000000146", "0532 123 45 67"
PROMPTS = [{"prompt": f"Merhaba, T.C. kimlik numaram {TCKN}, siparişim nerede?"},
           {"prompt": f"Telefonum {PHONE}, beni arar mısınız?"},
           {"prompt": "Kargo ücreti ne kadar?"}]


@pytest.fixture
def remote(monkeypatch):
    """A fake teacher on loopback that ayar must treat as another machine."""
    server = FakeTeacher(lambda body: (200, f"Yanıtımız: {len(user_text(body))} karakterlik sorunuzu aldık, "
                                            "teşekkür ederiz."))
    monkeypatch.setattr("ayar.govern.external.is_local", lambda url: False)
    monkeypatch.setattr("ayar.synth.run.is_local", lambda url: False)
    yield server
    server.close()


def run(tmp_path, fake, governance=None, **settings):
    write_jsonl(tmp_path / "in.jsonl", PROMPTS)
    base = {"teacher": teacher(fake), "task": "answer", "input": "in.jsonl", "output_dir": "out"}
    return synthesize(SynthSection.model_validate({**base, **settings}), tmp_path, governance=governance,
                      show_progress=False)


def sent_text(fake) -> str:
    return json.dumps(fake.requests, ensure_ascii=False)


def test_refuse_sends_nothing_and_names_no_value(tmp_path, remote):
    with pytest.raises(AyarError) as err:
        run(tmp_path, remote, privacy={"pii": "refuse"})
    assert remote.requests == []
    assert "refusing to send 3 requests" in str(err.value) and "nothing was sent" in str(err.value)
    assert TCKN not in str(err.value) and "0532" not in str(err.value)


def test_refuse_sends_when_the_recipe_allows_it(tmp_path, remote):
    summary = run(tmp_path, remote, governance=GovernanceSection(allow_external_pii=True),
                  privacy={"pii": "refuse", "redact_outputs": False})
    assert summary["records"] == 3 and TCKN in sent_text(remote)


def test_redact_masks_the_prompts_before_sending(tmp_path, remote):
    summary = run(tmp_path, remote, privacy={"pii": "redact"})
    text = sent_text(remote)
    assert len(remote.requests) == 3 and TCKN not in text and "123 45 67" not in text
    assert "[TCKN]" in text and "[TELEFON]" in text
    assert summary["pii"]["found_in_prompts"] == {"TCKN": 1, "PHONE_NUMBER": 1}
    out = (tmp_path / "out" / "synthetic.jsonl").read_text(encoding="utf-8")
    assert TCKN not in out and "[TCKN]" in out  # the record keeps the masked prompt


def test_drop_leaves_prompts_with_personal_data_out(tmp_path, remote):
    summary = run(tmp_path, remote, privacy={"pii": "drop", "redact_outputs": False})
    assert len(remote.requests) == 1 and remote.requests[0]["messages"][-1]["content"] == "Kargo ücreti ne kadar?"
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["where"], r["reason"]) for r in rejects] == [("in.jsonl:1", "pii_in_prompt"),
                                                           ("in.jsonl:2", "pii_in_prompt")]
    assert summary["records"] == 1 and TCKN not in json.dumps(rejects)


def test_the_teachers_replies_are_redacted(tmp_path):
    fake = FakeTeacher(lambda body: (200, f"Sizi {PHONE} numarasından arayacağız, kimlik no {TCKN} doğrulandı."))
    try:
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Beni arar mısınız?"}])
        section = SynthSection.model_validate({"teacher": teacher(fake), "task": "answer", "input": "in.jsonl",
                                               "output_dir": "out"})
        summary = synthesize(section, tmp_path, show_progress=False)
    finally:
        fake.close()
    out = (tmp_path / "out" / "synthetic.jsonl").read_text(encoding="utf-8")
    assert TCKN not in out and "123 45 67" not in out and "[TCKN]" in out
    assert summary["pii"]["found_in_outputs"] == {"PHONE_NUMBER": 1, "TCKN": 1}
