"""The demo's distillation stage on tiny models: a served teacher writes the student's data, end to end."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlparse

import pytest

from ayar.demo import distill
from ayar.demo.products import corpus_texts, product_splits, write_jsonl
from ayar.demo.profiles import DISTILL, PROFILES
from ayar.demo.run import LEDGER, write_recipe
from ayar.recipe import validate_recipe


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("student", sorted(distill.STUDENTS))
def test_distill_recipes_validate(student):
    synth = validate_recipe(distill.synth_recipe("http://127.0.0.1:9", "sft", 200))
    assert synth.synth.task == "answer" and synth.synth.limit == 200 and synth.synth.input == "../data/train.jsonl"
    assert synth.synth.teacher.temperature == 0 and synth.synth.teacher.api_key_env is None
    recipe = validate_recipe(distill.student_recipe("../models/student", PROFILES[student], 2.0, 100))
    assert recipe.data.train == "../data/distill/synthetic.jsonl" and recipe.train.epochs == 2.0
    assert recipe.eval.n == 100 and recipe.eval.few_shot == 3 and recipe.eval.few_shot_data == "../data/train.jsonl"
    assert not recipe.eval.forgetting.enabled and not recipe.eval.memorisation.enabled
    assert set(DISTILL) == set(PROFILES)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """A demo folder as `ayar demo --base tiny` leaves it, in miniature: product splits, the pretrained
    tiny model (random weights, a tokenizer trained on the demo corpus) and a short LoRA SFT run on it."""
    from ayar.model.tiny import build_tiny_model
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    out = tmp_path_factory.mktemp("distill") / "demo_out"
    splits = product_splits(n_train=40, n_val=0, n_test=12, seed=0)
    for name in ("train", "test"):
        write_jsonl(out / "data" / f"{name}.jsonl", splits[name])
    build_tiny_model(out / "runs" / "pretrain" / "model", corpus_texts(seed=0, n=400), vocab_size=1024,
                     hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                     max_positions=4096)
    teacher = write_recipe(out / "recipes" / "sft.yaml", {
        "model": {"path": "../runs/pretrain/model"}, "data": {"train": "../data/train.jsonl", "max_length": 256},
        "method": "sft", "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        # long enough that the teacher starts its answers instead of ending its turn at once
        "train": {"learning_rate": 1e-2, "max_steps": 30, "micro_batch_size": 8, "tracking": "none"},
        "output_dir": "../runs/sft", "governance": LEDGER})
    train_from_recipe(load_recipe(teacher), overwrite=True)
    return out


@pytest.mark.slow
def test_served_teacher_writes_the_students_data_end_to_end(tiny_demo):
    from ayar.eval.generate import generate, load_for_inference
    from ayar.recipe import load_recipe

    out = tiny_demo
    result = distill.run_distill(out, base="tiny", student="tiny", prompts=10, n_eval=6, student_epochs=1.0)

    # The student's training file holds the teacher's greedy replies to the first 10 training prompts, not the gold.
    records = _lines(out / "data" / "distill" / "synthetic.jsonl")
    train = _lines(out / "data" / "train.jsonl")[:10]
    model, tokenizer = load_for_inference(out / "runs" / "sft", dtype="fp32")
    expected = generate(model, tokenizer, [r["messages"][:-1] for r in train], max_new_tokens=64, batch_size=1)
    by_prompt = {r["messages"][1]["content"]: r for r in records}
    assert len(records) + result["synth"]["rejects"]["total"] == 10 and records
    for record, reply in zip(train, expected, strict=True):
        written = by_prompt.get(record["messages"][1]["content"])
        if written is not None:
            assert written["messages"][-1]["content"] == reply != record["messages"][-1]["content"]
            assert written["meta"]["synthetic"]["teacher"] == "sft" and written["meta"]["synthetic"]["task"] == "answer"
    student = load_recipe(out / "runs" / "distill-student" / "recipe.yaml")
    assert student.data.train == str((out / "data" / "distill" / "synthetic.jsonl").resolve())

    # The figures: three systems on the same 6 held-out products, the share kept and its interval.
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))["distill"]
    assert results == json.loads(json.dumps(result))
    assert results["sizes"] == {"prompts": 10, "n_eval": 6, "student_epochs": 1.0}
    row = results["metrics"]["json_parse_rate"]
    assert set(row) == {"teacher", "student_before", "student_after", "after_minus_before_ci95", "kept", "kept_ci95"}
    comparison = json.loads((out / "runs" / "distill-student" / "eval" / "comparison.json").read_text())
    by_name = {r["name"]: r for r in comparison["metrics"]}
    for name, row in results["metrics"].items():  # student figures recomputed from the replies = eval's own
        assert row["student_after"] == by_name[name]["tuned"] and row["student_before"] == by_name[name]["base"]
        if row["teacher"]:
            assert row["kept"] == pytest.approx(row["student_after"] / row["teacher"])
    assert results["synth"]["usage"]["completion_tokens"] > 0 and results["synth"]["requests"]["jobs"] == 10
    assert results["teacher_on_train_prompts"]["n"] == len(records)
    assert results["teacher"]["held_out_replies_from"] == "the served teacher"  # the run had no evaluation

    # Recorded: the server's loads and unloads, synth, the student's training and eval, in the demo's ledger.
    events = [e["event"] for e in results["ledger_events"]]
    assert {"serve_load", "serve_unload", "synth", "eval"} <= set(events)
    assert events.index("serve_load") < events.index("synth") < events.index("serve_unload") < events.index("eval")
    assert (out / "runs" / "sft" / "eval" / "distill.json").is_file()

    # The server is gone: nothing listens on its port any more.
    url = urlparse(results["teacher"]["url"])
    with pytest.raises(OSError), socket.create_connection((url.hostname, url.port), timeout=2):
        pass


def test_needs_a_teacher_and_keeps_the_main_results(tmp_path):
    from ayar.errors import AyarError

    with pytest.raises(AyarError, match="run `ayar demo"):
        distill.run_distill(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"base": "tiny", "seconds": 1.0}))
    distill.write_results(tmp_path, {"metrics": {}})
    distill.write_results(tmp_path, {"metrics": {"x": 1}})
    assert json.loads((tmp_path / "results.json").read_text()) == {"base": "tiny", "seconds": 1.0,
                                                                   "distill": {"metrics": {"x": 1}}}


def test_cli_distill_only_needs_an_earlier_demo(tmp_path):
    from typer.testing import CliRunner

    from ayar.cli import app
    from ayar.errors import AyarError

    result = CliRunner().invoke(app, ["demo", "--distill-only", "--out", str(tmp_path)])
    assert isinstance(result.exception, AyarError) and "no finished product run" in str(result.exception)
    assert not (tmp_path / "data").exists()  # the main demo did not run (it would have written data/)


def test_the_teachers_held_out_replies_are_reused_only_when_its_evaluation_matches(tmp_path):
    run = tmp_path / "runs" / "sft"
    write_jsonl(tmp_path / "data" / "test.jsonl", product_splits(n_train=0, n_val=0, n_test=4, seed=0)["test"])
    section = validate_recipe(distill.student_recipe("m", PROFILES["tiny"], 1.0, 3)).eval.resolved(
        tmp_path / "recipes")
    examples, prompts = distill.held_out(section)
    assert len(examples) == 3 and prompts[0][0]["role"] == "system" and prompts[0][-1]["role"] == "user"
    assert distill.evaluated_replies(run, examples, prompts, section) is None  # no evaluation at all

    def evaluation(generation: dict, rows: list[dict]) -> None:
        (run / "eval").mkdir(parents=True, exist_ok=True)
        (run / "eval" / "comparison.json").write_text(json.dumps({"generation": generation}))
        write_jsonl(run / "eval" / "examples.jsonl", rows)

    same = {**section.generation.model_dump(), "batch_size": 16, "system_prompt": None, "few_shot": 3}
    rows = [{"id": ex.id, "prompt": p, "reference": ex.reference, "base": "x", "tuned": f"reply {i}"}
            for i, (ex, p) in enumerate(zip(examples, prompts, strict=True))]
    evaluation(same, [*reversed(rows), {**rows[0], "id": "test.jsonl:4"}])  # order and extra rows do not matter
    assert distill.evaluated_replies(run, examples, prompts, section) == ["reply 0", "reply 1", "reply 2"]
    evaluation({**same, "stop": []}, rows)  # decoded differently
    assert distill.evaluated_replies(run, examples, prompts, section) is None
    evaluation(same, rows[:2])  # an example it did not see
    assert distill.evaluated_replies(run, examples, prompts, section) is None
    evaluation(same, [{**rows[0], "prompt": prompts[1]}, *rows[1:]])  # another prompt under that id
    assert distill.evaluated_replies(run, examples, prompts, section) is None
