"""The four synth tasks, their quality checks and the provenance of every record."""

from __future__ import annotations

import json

import pytest
from synth_fake import FakeTeacher, teacher, user_text, write_jsonl

from ayar.errors import AyarError
from ayar.synth.config import SynthSection
from ayar.synth.quality import turkish_share
from ayar.synth.run import synthesize


@pytest.fixture
def fake():
    server = FakeTeacher()
    yield server
    server.close()


def run(tmp_path, fake, **settings) -> tuple[dict, list[dict], list[dict]]:
    base = {"teacher": teacher(fake), "output_dir": "out", "privacy": {"redact_outputs": False}}
    summary = synthesize(SynthSection.model_validate({**base, **settings}), tmp_path, show_progress=False)
    read = lambda name: [json.loads(line) for line in (tmp_path / "out" / name).read_text().splitlines()]  # noqa: E731
    return summary, read("synthetic.jsonl"), read("rejects.jsonl")


def test_answer_keeps_the_prompt_and_records_provenance(tmp_path, fake):
    fake.reply = lambda body: (200, f"Merhaba, {user_text(body)} sorunuz için teşekkür ederiz.")
    write_jsonl(tmp_path / "in.jsonl", [
        {"messages": [{"role": "system", "content": "Kibar ol."}, {"role": "user", "content": "Kargom nerede?"},
                      {"role": "assistant", "content": "eski cevap"}]},
        {"prompt": "İade nasıl yapılır?"}])
    summary, records, rejects = run(tmp_path, fake, task="answer", input="in.jsonl")
    assert rejects == [] and summary["records"] == 2
    assert records[0]["messages"][:2] == [{"role": "system", "content": "Kibar ol."},
                                          {"role": "user", "content": "Kargom nerede?"}]
    assert records[0]["messages"][2] == {"role": "assistant",
                                         "content": "Merhaba, Kargom nerede? sorunuz için teşekkür ederiz."}
    assert fake.requests[0]["messages"][-1]["content"] == "Kargom nerede?"  # the old reply is not sent
    meta = records[1]["meta"]["synthetic"]
    assert meta["teacher"] == "fake-teacher" and meta["task"] == "answer" and meta["endpoint"].startswith("http://127")
    assert len(meta["prompt_sha256"]) == 64 and meta["answered_at"].endswith("Z")


def test_generate_parses_json_and_checks_turkish(tmp_path, fake):
    replies = iter([
        '{"prompt": "Faturamı nasıl indiririm?", "response": "Hesabım sayfasından faturanızı indirebilirsiniz."}',
        'Elbette! {"prompt": "Kargo ücreti ne kadar?", "response": "Kargo 200 TL üzeri siparişlerde ücretsizdir."}',
        '{"prompt": "How do I pay?", "response": "You can pay by card at checkout, it is quick and safe."}',
        "Üzgünüm, bunu yapamam.",
        '{"prompt": "Sipariş iptali?", "response": ""}',
        '{"prompt": "Faturamı nasıl indiririm?", "response": "Hesabım sayfasından faturanızı indirebilirsiniz."}',
    ])
    fake.reply = lambda body: (200, next(replies))
    write_jsonl(tmp_path / "seeds.jsonl", [{"prompt": "Siparişim nerede?", "completion": "Kargoda, yarın gelir."}])
    summary, records, rejects = run(tmp_path, fake, task="generate",
                                    generate={"seeds": "seeds.jsonl", "topics": ["fatura", "kargo"], "per_topic": 3})
    assert [r["messages"][0]["content"] for r in records] == ["Faturamı nasıl indiririm?", "Kargo ücreti ne kadar?"]
    assert [(r["where"], r["reason"]) for r in rejects] == [
        ("generate: topic 1, example 3", "not_turkish"), ("generate: topic 2, example 1", "not_json"),
        ("generate: topic 2, example 2", "schema_invalid"), ("generate: topic 2, example 3", "exact_duplicate")]
    assert rejects[3]["detail"] == "exact duplicate of generate: topic 1, example 1"
    assert summary["rejects"]["by_reason"] == {"not_turkish": 1, "not_json": 1, "schema_invalid": 1,
                                               "exact_duplicate": 1}
    assert len({json.dumps(b, sort_keys=True) for b in fake.requests}) == 6  # distinct requests (seeds)
    assert "Siparişim nerede?" in fake.requests[0]["messages"][-1]["content"]  # the seed example is shown
    assert "Turkish" in fake.requests[0]["messages"][-1]["content"]


def test_label_validates_against_the_schema_with_reasons(tmp_path, fake):
    schema = {"type": "object", "required": ["category"], "additionalProperties": False,
              "properties": {"category": {"enum": ["elektronik", "giyim"]}, "tags": {"type": "array"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    write_jsonl(tmp_path / "products.jsonl", [{"text": f"Ürün {i}: açıklama"} for i in range(4)])
    replies = {"Ürün 0": '{"category": "elektronik", "tags": ["kablosuz"]}',
               "Ürün 1": '{"category": "mobilya"}',
               "Ürün 2": '{"tags": []}',
               "Ürün 3": "kategori: giyim"}
    fake.reply = lambda body: (200, next(v for k, v in replies.items() if k in user_text(body)))
    summary, records, rejects = run(tmp_path, fake, task="label", input="products.jsonl",
                                    label={"field": "label", "schema_file": "schema.json",
                                           "instruction": "Kategoriyi çıkar."})
    assert records == [{"messages": [{"role": "user", "content": "Ürün 0: açıklama"},
                                     {"role": "assistant", "content": '{"category": "elektronik", "tags": ["kablosuz"]}'}],
                        "label": {"category": "elektronik", "tags": ["kablosuz"]}, "meta": records[0]["meta"]}]
    assert [(r["where"], r["reason"], r["detail"]) for r in rejects] == [
        ("products.jsonl:2", "schema_invalid", "1 schema violation(s); first at category: fails `enum`"),
        ("products.jsonl:3", "schema_invalid", "1 schema violation(s); first at (root): fails `required`"),
        ("products.jsonl:4", "not_json", "the reply holds no JSON object")]
    assert "mobilya" not in json.dumps(rejects, ensure_ascii=False)  # rejects never carry the text
    assert '"enum"' in fake.requests[0]["messages"][-1]["content"]  # the schema is shown to the teacher


def test_rewrite_replaces_the_last_assistant_turn(tmp_path, fake):
    fake.reply = lambda body: (200, "  Siparişiniz yarın size ulaşacaktır, teşekkür ederiz.  ")
    write_jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "kargo ne zaman"},
                                                         {"role": "assistant", "content": "yarın gelir sana"}]}])
    _, records, _ = run(tmp_path, fake, task="rewrite", input="chats.jsonl",
                        rewrite={"instruction": "Resmi siz diliyle yeniden yaz."})
    assert records[0]["messages"] == [{"role": "user", "content": "kargo ne zaman"},
                                      {"role": "assistant", "content": "Siparişiniz yarın size ulaşacaktır, teşekkür ederiz."}]
    sent = fake.requests[0]["messages"][-1]["content"]
    assert sent.startswith("Resmi siz diliyle yeniden yaz.") and "yarın gelir sana" in sent


def test_dedup_against_existing_data_and_length_limits(tmp_path, fake):
    existing = ("Kargonuz yarın öğleden önce teslim edilecek; takip numaranız SMS ve e-posta ile gönderildi. Teslimat "
                "sırasında evde olamayacaksanız adresinize en yakın şubeden paketinizi üç iş günü içinde alabilir, "
                "dilerseniz teslim tarihini uygulamamızdan değiştirebilirsiniz. Ayrıca iade ve değişim taleplerinizi de aynı "
                "ekrandan, fatura bilgilerinizi girerek kolayca oluşturabilirsiniz. Sorularınız için müşteri "
                "hizmetlerimiz hafta içi her gün dokuzdan altıya kadar hizmetinizdedir. İyi günler dileriz.")
    replies = {"a": existing, "b": existing.replace("İyi günler dileriz.", "İyi günler dileriz!"),
               "c": "Evet.", "d": "İadeniz onaylandı; ücret beş iş günü içinde kartınıza yansıyacaktır."}
    fake.reply = lambda body: (200, replies[user_text(body)])
    write_jsonl(tmp_path / "human.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                         {"role": "assistant", "content": existing}]}])
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": k} for k in replies])
    _, records, rejects = run(tmp_path, fake, task="answer", input="in.jsonl",
                              quality={"min_chars": 10, "language": "tr", "dedup": {"against": ["human.jsonl"]}})
    assert [r["messages"][0]["content"] for r in records] == ["d"]
    assert [(r["where"], r["reason"]) for r in rejects] == [("in.jsonl:1", "exact_duplicate"),
                                                           ("in.jsonl:2", "near_duplicate"), ("in.jsonl:3", "too_short")]
    assert rejects[0]["detail"] == "exact duplicate of human.jsonl:1"
    assert rejects[1]["detail"] == "near duplicate of human.jsonl:1"


def test_turkish_share():
    assert turkish_share("Siparişiniz yarın kargoya verilecek, teşekkür ederiz.") > 0.5
    assert turkish_share("Your order ships tomorrow, thank you.") == 0.0
    assert turkish_share("") == 0.0


def test_bad_input_is_listed_by_location_and_nothing_is_sent(tmp_path, fake):
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "iyi"}, {"question": "x"},
                                        {"messages": [{"role": "assistant", "content": "y"}]}])
    with pytest.raises(AyarError) as err:
        run(tmp_path, fake, task="answer", input="in.jsonl")
    text = str(err.value)
    assert "2 unusable record(s); nothing was sent" in text
    assert "in.jsonl:2: needs `messages` or `prompt`" in text and "in.jsonl:3:" in text
    assert fake.requests == []


def test_task_sections_are_checked_when_the_recipe_loads():
    with pytest.raises(ValueError) as err:
        SynthSection.model_validate({"teacher": {"base_url": "http://localhost:1/v1", "model": "m"}, "task": "label",
                                     "rewrite": {"instruction": "x"}})
    text = str(err.value)
    assert "task label needs a `label:` section" in text and "needs `input`" in text and "section `rewrite`" in text


def test_judge_scores_reject_below_the_threshold(tmp_path, fake):
    fake.reply = lambda body: (200, f"{user_text(body)}: siparişiniz {'yarın' if 'iyi' in user_text(body) else 'bilinmiyor'}"
                                    " olarak görünüyor, teşekkür ederiz.")
    judge = FakeTeacher(lambda body: (200, "Yeterli.\nSCORE: 8" if "yarın" in user_text(body) else
                                      "Zayıf.\nSCORE: 3" if "bilinmiyor" in user_text(body) else "no score"))
    try:
        write_jsonl(tmp_path / "in.jsonl", [{"prompt": "iyi soru"}, {"prompt": "kötü soru"}])
        summary, records, rejects = run(tmp_path, fake, task="answer", input="in.jsonl",
                                        quality={"judge": {"base_url": judge.url, "model": "judge",
                                                           "api_key_env": None, "threshold": 6}})
    finally:
        judge.close()
    assert [r["messages"][0]["content"] for r in records] == ["iyi soru"]
    assert records[0]["meta"]["synthetic"]["judge_score"] == 8.0
    assert [(r["reason"], r["detail"]) for r in rejects] == [("low_score", "judge score 3 < 6")]
    assert len(judge.requests) == 2 and summary["rejects"]["by_reason"] == {"low_score": 1}


def test_the_ledger_records_inputs_and_outputs_by_hash(tmp_path, fake, monkeypatch):
    from ayar.govern.ledger import Ledger

    monkeypatch.setenv("AYAR_LEDGER", str(tmp_path / "ledger.jsonl"))
    write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Merhaba, kargom nerede?"}])
    run(tmp_path, fake, task="answer", input="in.jsonl")
    entry = [e for e in Ledger(tmp_path / "ledger.jsonl").entries() if e["event"] == "synth"][-1]
    assert set(entry["inputs"]) == {"input:in.jsonl"} and set(entry["outputs"]) == {"synthetic.jsonl",
                                                                                     "rejects.jsonl"}
    assert entry["data"]["teacher"]["model"] == "fake-teacher" and "Merhaba" not in json.dumps(entry)
