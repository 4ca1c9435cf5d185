"""The governed pipeline end to end (fixture in conftest.py): the ledger holds every stage, lineage reaches
the source files, erasure lookup finds exactly the runs that used a customer's records, no raw identifier is
stored, gates block export and serve, the model card parses as Hugging Face expects, Annex IV is complete."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ayar.govern.ledger import Ledger, verify

pytestmark = pytest.mark.slow


def cli(*args):
    from ayar.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def events(pipeline):
    return [e["event"] for e in Ledger(pipeline.ledger).entries()]


def test_every_stage_is_recorded_and_the_ledger_verifies(pipeline):
    assert events(pipeline)[:7] == ["prepare", "train", "prepare", "train", "eval", "gate_bypassed", "export"]
    result = verify(Ledger(pipeline.ledger))
    assert result.ok, result.problems
    assert result.files_checked > 20
    prepare = Ledger(pipeline.ledger).entries()[0]
    assert prepare["data"]["governance"]["legal_basis"] == "meşru menfaat (KVKK 5/2-f)"
    assert prepare["data"]["pii"]["by_entity"]["TCKN"] == 12
    assert prepare["data"]["subject_index"]["written"] is True
    evaluation = next(e for e in Ledger(pipeline.ledger).entries() if e["event"] == "eval")
    assert evaluation["data"]["metrics"][0]["name"] == "exact_match"
    assert evaluation["data"]["gate"]["status"] == "failed"
    assert "eval_data" in evaluation["inputs"]


def test_lineage_of_an_export_reaches_its_source_files(pipeline):
    from ayar.govern.lineage import lineage

    weights = pipeline.export_folder / "adapter_model.safetensors"
    result = lineage(Ledger(pipeline.ledger).entries(), str(weights))
    assert [e["event"] for e in result["upstream"]] == ["export", "train", "prepare"]
    assert [s["path"] for s in result["sources"]] == [str(pipeline.sources["a"].resolve())]
    assert pipeline.sources["b"].name not in json.dumps(result)  # the other dataset is not in this lineage
    out = cli("audit", "lineage", weights, "--ledger", pipeline.ledger)
    assert out.exit_code == 0, out.output
    assert "source:tickets_a.jsonl" in out.output and "prepared " in out.output
    as_json = json.loads(cli("audit", "lineage", pipeline.runs["a"], "--ledger", pipeline.ledger, "--json").output)
    assert [e["event"] for e in as_json["downstream"]] == ["eval", "export"]
    assert as_json["upstream"][-1]["event"] == "prepare"


def lookup(pipeline, value, kind):
    out = cli("audit", "subject", value, "--kind", kind, "--ledger", pipeline.ledger,
              "--secret-file", pipeline.secret_file, "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_erasure_lookup_finds_exactly_the_runs_that_used_a_customer(pipeline):
    c1, c3 = pipeline.customers["c1"], pipeline.customers["c3"]
    run_a, run_b = str(pipeline.runs["a"].resolve()), str(pipeline.runs["b"].resolve())
    for value, kind in ((c1.tckn, "tckn"), (c1.email.upper(), "email"), ("+90 532 123 4567", "phone"),
                        (c1.customer_id, "customer_id")):
        found = lookup(pipeline, value, kind)
        assert [d["dataset"] for d in found["datasets"]] == [str((pipeline.root / "data_a").resolve())], kind
        assert found["datasets"][0]["splits"] == {"train": 6}
        assert [r["run"] for r in found["runs"]] == [run_a]
        assert [e["format"] for e in found["exports"]] == ["adapter"]
        assert [e["run"] for e in found["evaluations"]] == [run_a]
    found = lookup(pipeline, c3.tckn, "tckn")
    assert [r["run"] for r in found["runs"]] == [run_b] and found["exports"] == []
    nobody = lookup(pipeline, "10000000146", "tckn")
    assert nobody["datasets"] == nobody["runs"] == []
    text = cli("audit", "subject", c1.tckn, "--kind", "tckn", "--ledger", pipeline.ledger,
               "--secret-file", pipeline.secret_file).output
    assert "what to do next" in text and "ayar prepare RECIPE" in text and c1.tckn not in text
    wrong_key = pipeline.root / "other.key"
    wrong_key.write_text("another-secret-of-32-characters!", encoding="utf-8")
    other = json.loads(cli("audit", "subject", c1.tckn, "--kind", "tckn", "--ledger", pipeline.ledger,
                           "--secret-file", wrong_key, "--json").output)
    assert other["runs"] == [] and len(other["other_key"]) == 2


def test_no_raw_identifier_is_stored_by_governance(pipeline):
    stored = [pipeline.ledger, *sorted(Ledger(pipeline.ledger).store.iterdir()),
              pipeline.root / "data_a" / "subjects.json", pipeline.root / "data_b" / "subjects.json"]
    text = "\n".join(p.read_text(encoding="utf-8") for p in stored)
    assert len(stored) == 5
    for person in pipeline.customers.values():
        for value in (person.tckn, person.email, person.phone, person.phone.replace(" ", ""), person.customer_id,
                      person.name, person.name.split()[0]):
            assert value not in text, value


def test_failing_gate_blocks_export_and_serve_naming_the_condition(pipeline, tmp_path):
    from ayar.export.run import export_run
    from ayar.govern.gates import GateError
    from ayar.serve.launch import ServeOptions, build

    with pytest.raises(GateError, match=r"FAILED tuned\.exact_match >= 0\.99: value is 0"):
        export_run(pipeline.runs["a"], ["adapter"], tmp_path / "blocked", verify=False)
    assert not (tmp_path / "blocked").exists()
    out = cli("export", pipeline.runs["a"], "--format", "adapter", "--out", tmp_path / "cli", "--no-verify")
    assert isinstance(out.exception, GateError) and "--no-gate" in str(out.exception)  # main() prints it, exit 2
    with pytest.raises(GateError, match=r"tuned\.exact_match >= 0\.99"):
        build(ServeOptions(target=str(pipeline.runs["a"])))
    before = len(events(pipeline))
    _, host, _ = build(ServeOptions(target=str(pipeline.runs["a"]), no_gate=True))
    new = Ledger(pipeline.ledger).entries()[before:]
    assert [e["event"] for e in new] == ["gate_bypassed", "serve_load", "serve_load"]
    assert new[0]["data"]["stage"] == "serve"
    assert new[2]["data"]["name"] == "run_a" and new[2]["data"]["gate"]["status"] == "bypassed"
    build(ServeOptions(target=str(pipeline.runs["b"])))  # no gate in run B's recipe: served


def test_gate_passes_when_the_evaluation_meets_it(pipeline):
    from ayar.govern.gates import decide

    report = json.loads((pipeline.runs["a"] / "report.json").read_text(encoding="utf-8"))
    tuned = report["comparison"]["metrics"][0]["tuned"]
    recipe = pipeline.runs["a"] / "recipe.yaml"
    original = recipe.read_text(encoding="utf-8")
    try:
        recipe.write_text(original.replace("tuned.exact_match >= 0.99", f"tuned.exact_match >= {tuned}"),
                          encoding="utf-8")
        assert decide(pipeline.runs["a"]).status == "passed"
    finally:
        recipe.write_text(original, encoding="utf-8")


def test_model_card_metadata_parses_as_hugging_face_expects(pipeline):
    from huggingface_hub import ModelCard

    out = cli("card", pipeline.runs["a"])
    assert out.exit_code == 0, out.output
    for folder in (pipeline.runs["a"], pipeline.export_folder):
        card = ModelCard.load(folder / "README.md")
        assert card.data.license == "other" and card.data.language == ["tr"]
        assert card.data.library_name == "peft" and card.data.datasets == ["data_a"]
        results = card.data.eval_results
        assert [r.metric_type for r in results] == ["exact_match"]
        assert results[0].dataset_split == "test" and isinstance(results[0].metric_value, float)
        assert "## Evaluation" in card.text and "95% CI" in card.text
        assert "TCKN 12" in card.text and "To be completed by the provider" in card.text
    assert verify(Ledger(pipeline.ledger)).ok  # the rewritten export README is recorded, not "changed"


def test_annex_iv_has_all_nine_sections_and_cites_the_ledger(pipeline):
    from ayar.govern.annex_iv import KVKK, SECTIONS

    out = cli("docs", pipeline.runs["a"], "--format", "md,html")
    assert out.exit_code == 0, out.output
    md = (pipeline.runs["a"] / "annex_iv.md").read_text(encoding="utf-8")
    headings = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert headings == [*SECTIONS, KVKK] and len(SECTIONS) == 9
    assert "ledger entry 1" in md and "ledger entry 0" in md  # train and prepare cited
    assert "legal basis: meşru menfaat (KVKK 5/2-f)" in md and "retention days: 365" in md
    assert "cross border transfer: **To be completed by the provider:** Do data or models leave" in md
    html = (pipeline.runs["a"] / "annex_iv.html").read_text(encoding="utf-8")
    assert html.count("<h2>") == 10 and "<table>" in html


def test_admin_api_loads_pass_the_gate_and_are_recorded(pipeline):
    from fastapi.testclient import TestClient

    from ayar.serve.launch import ServeOptions, build

    app, _, _ = build(ServeOptions(target=str(pipeline.runs["b"]), adapter_roots=[str(pipeline.runs["a"].parent)]))
    before = len(events(pipeline))
    with TestClient(app) as client:
        refused = client.post("/admin/adapters", json={"name": "a", "path": str(pipeline.runs["a"] / "adapter")})
        assert refused.status_code == 403 and "tuned.exact_match >= 0.99" in refused.json()["error"]["message"]
        loaded = client.post("/admin/adapters", json={"name": "b2", "path": str(pipeline.runs["b"] / "adapter")})
        assert loaded.status_code == 201
        assert client.delete("/admin/adapters/b2").status_code == 200
    new = Ledger(pipeline.ledger).entries()[before:]
    # then the server stops: its base model and run_b's own adapter are unloaded too
    assert [(e["event"], e["data"]["name"]) for e in new] == [
        ("serve_load", "b2"), ("serve_unload", "b2"), ("serve_unload", "llama"), ("serve_unload", "run_b")]
    assert new[0]["data"]["run_dir"] == str(pipeline.runs["b"].resolve())
    assert "adapter/adapter_model.safetensors" in new[0]["inputs"]
    served = {(s["name"], s["unloaded"]) for s in lookup(pipeline, pipeline.customers["c3"].tckn, "tckn")["served"]}
    assert ("b2", True) in served and ("run_b", True) in served  # c3's records are in run B, served and unloaded
    # the admin API refused run A: c1 is served only where the gate test bypassed the gate (--no-gate)
    assert {s["name"] for s in lookup(pipeline, pipeline.customers["c1"].tckn, "tckn")["served"]} <= {"run_a"}


def test_gate_refuses_an_evaluation_of_other_weights(pipeline, tmp_path):
    import shutil

    from ayar.govern.gates import GateError, decide
    from ayar.govern.record import ledger_for_run

    run = tmp_path / "run_copy"
    shutil.copytree(pipeline.runs["a"], run)
    recipe = run / "recipe.yaml"
    recipe.write_text(recipe.read_text(encoding="utf-8").replace("tuned.exact_match >= 0.99",
                                                                 "tuned.exact_match >= 0"), encoding="utf-8")
    assert decide(run).status == "passed"  # report.json passes; no evaluation of this folder recorded yet
    ledger_for_run(run).append("eval", {"run_dir": str(run.resolve())}, inputs={
        "adapter/adapter_model.safetensors": {"path": str(tmp_path / "retrained" / "adapter_model.safetensors"),
                                              "sha256": "0" * 64}})
    with pytest.raises(GateError, match=r"was of other weights: the run was trained again since"):
        decide(run)


def test_derived_data_and_the_demo_tail(pipeline, tmp_path, tiny_llama):
    """A file mixed from a prepared split (recorded with record_derived) carries its subjects to the run trained
    on it; governance_tail verifies, traces, looks up and documents that run."""
    import shutil

    import yaml

    from ayar.govern.record import record_derived
    from ayar.govern.showcase import first_tckn, governance_tail
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe
    from helpers import colour_conversations, write_jsonl

    ledger = tmp_path / "ledger.jsonl"  # a copy of the pipeline's ledger: the shared one stays as the tests expect
    for suffix in ("", ".head"):
        shutil.copy(str(pipeline.ledger) + suffix, str(ledger) + suffix)
    prepared = pipeline.root / "data_a" / "train.jsonl"
    tickets = [json.loads(line) for line in prepared.read_text(encoding="utf-8").splitlines()][:3]
    write_jsonl(tmp_path / "mix.jsonl", tickets + colour_conversations(5, seed=4))
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({
        "model": {"path": str(tiny_llama), "dtype": "fp32"}, "data": {"train": "mix.jsonl", "max_length": 512},
        "train": {"max_steps": 1, "micro_batch_size": 4, "precision": "fp32", "tracking": "none"},
        "output_dir": "run_mix", "governance": {"ledger": str(ledger)}}), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml")
    record_derived([prepared], [tmp_path / "mix.jsonl"], "3 prepared tickets + 5 colour records", recipe.governance)
    run = train_from_recipe(recipe).output_dir
    lines = {t["meta"]["line"] for t in tickets}
    subject = first_tckn(pipeline.sources["a"], lines)
    assert subject == pipeline.customers["c1"].tckn  # tickets_a.jsonl starts with c1's six tickets
    result = governance_tail(run, subject=subject, secret=pipeline.secret_file.read_text(encoding="utf-8"))
    assert result["verified"]
    assert [e["event"] for e in result["lineage"]["upstream"]] == ["train", "derive", "prepare"]
    assert [r["run"] for r in result["subject"]["runs"]] == [str(pipeline.runs["a"].resolve()), str(run.resolve())]
    assert {p.rsplit("/", 1)[-1] for p in result["card"]} == {"README.md"}
    assert {p.rsplit(".", 1)[-1] for p in result["docs"]} == {"md", "html"}
