"""Human evaluation: the blinded set, ratings from the page and a CSV, tallies and agreement worked by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from ayar.errors import AyarError
from ayar.eval.human import add_rater, add_rating, export_set, import_csv, load_items, rater_tokens
from ayar.eval.human_results import render_results, results, write_results
from ayar.eval.proportions import wilson_interval


def evaluated_run(tmp_path, n: int = 6, name: str = "run-support"):
    """A run folder holding only what `ayar eval` leaves for human evaluation: eval/examples.jsonl."""
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    rows = [{"id": f"ex{i}", "prompt": [{"role": "user", "content": f"Soru {i}?"}], "reference": None,
             "base": f"taban yanıt {i}", "tuned": f"ayarlı yanıt {i}", "scores": {}} for i in range(n)]
    (run / "eval" / "examples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return run


def key_of(run) -> dict:
    return json.loads((run / "eval" / "human" / "key.json").read_text())


def verdict_for(outcome: str, x_side: str) -> str:
    """The blinded verdict a rater must give for ``outcome`` of system X, shown on ``x_side``."""
    return {"win": x_side, "loss": "b" if x_side == "a" else "a", "tie_good": "both_good",
            "tie_bad": "both_bad"}[outcome]


def test_the_set_is_blinded_and_the_order_recorded(tmp_path):
    run = evaluated_run(tmp_path, n=40)
    out = export_set(run, 30, raters=["alice"], seed=1)
    shown = (out / "items.jsonl").read_text() + (out / "ratings.csv").read_text()
    for secret in ("tuned", "base", "run-support", "ex1", "ex2", "x", "y"):
        assert f'"{secret}"' not in shown and f",{secret}," not in shown
    items, key = load_items(run), key_of(run)
    assert len(items) == 30 and set(items[0]) == {"item", "prompt", "answer_a", "answer_b"}
    sides = [key["items"][i["item"]]["a"] for i in items]
    assert 5 < sides.count("x") < 25  # a coin per item, not a fixed side
    for item in items:  # the key says where each system's answer is
        entry = key["items"][item["item"]]
        tuned = item["answer_a"] if entry["a"] == "x" else item["answer_b"]
        assert tuned.startswith("ayarlı") and entry["example_id"].removeprefix("ex") in tuned
    with pytest.raises(AyarError, match="exists"):
        export_set(run, 5)


def test_ratings_unblind_by_the_key_and_agreement_by_hand(tmp_path):
    run = evaluated_run(tmp_path)
    export_set(run, 6, raters=["alice", "bob"], seed=3)
    items, key = load_items(run), key_of(run)
    x_side = [key["items"][i["item"]]["a"] == "x" and "a" or "b" for i in items]
    alice = ["win", "win", "win", "loss", "tie_good", "tie_bad"]
    bob = ["win", "win", "loss", "loss", "tie_good", "win"]
    for item, side, outcome in zip(items, x_side, alice, strict=True):
        add_rating(run, "alice", item["item"], verdict_for("loss", side))  # replaced by the next rating
        add_rating(run, "alice", item["item"], verdict_for(outcome, side), "yorum")
    filled = tmp_path / "bob.csv"  # bob rates offline in the CSV
    with open(run / "eval" / "human" / "ratings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for row, side, outcome in zip(rows, x_side, bob, strict=True):
        row["verdict"] = verdict_for(outcome, side)
    with open(filled, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert import_csv(run, filled, "bob") == 6
    # The LLM judge's outcome for the tuned model, per item in the set's order.
    judge = ["win", "win", "win", "loss", "tie", "loss"]
    (run / "eval" / "judge_pairs.jsonl").write_text("".join(
        json.dumps({"id": key["items"][i["item"]]["example_id"], "outcome": o}) + "\n"
        for i, o in zip(items, judge, strict=True)))

    summary = write_results(run)
    a = summary["per_rater"]["alice"]
    assert (a["n"], a["win"], a["tie"], a["loss"], a["tie_bad"]) == (6, 3, 2, 1, 1)
    assert a["win_ci95"] == pytest.approx(list(wilson_interval(3, 6)))
    b = summary["per_rater"]["bob"]
    assert (b["win"], b["tie"], b["loss"]) == (3, 1, 2)
    pooled = summary["pooled"]
    assert (pooled["n"], pooled["win"], pooled["tie"], pooled["loss"]) == (12, 6, 3, 3)
    assert pooled["win_rate"] == 0.5 and pooled["win_ci95"][0] <= 0.5 <= pooled["win_ci95"][1]
    # Cohen: p_o = 4/6; p_e = (3*3 + 1*2 + 1*1 + 1*0) / 36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 0.5.
    pair = summary["agreement"]["cohen"]["alice~bob"]
    assert pair["items"] == 6 and pair["kappa"] == pytest.approx(0.5) and pair["percent_agreement"] == 4 / 6
    # Fleiss (two raters): mean P_i = 4/6; p = (6, 3, 2, 1) / 12, P_e = 50/144; kappa = (2/3 - 50/144) / (94/144).
    assert summary["agreement"]["fleiss"]["kappa"] == pytest.approx((2 / 3 - 50 / 144) / (94 / 144))
    # Judge: 9 of 12 ratings agree; human (win 6, loss 3, tie 3) x judge (win 6, loss 4, tie 2): p_e = 54/144.
    judged = summary["judge_agreement"]
    assert judged["ratings"] == 12 and judged["percent_agreement"] == 0.75
    assert judged["kappa"] == pytest.approx((0.75 - 54 / 144) / (1 - 54 / 144))
    assert json.loads((run / "eval" / "human.json").read_text())["ratings"] == 12
    assert "Fleiss' kappa" in render_results(summary) and "LLM judge" in render_results(summary)


def test_results_go_to_the_ledger_and_the_report(tmp_path):
    from ayar.eval.report import build_report, collect
    from ayar.govern.ledger import Ledger, default_ledger_path

    run = evaluated_run(tmp_path)
    export_set(run, 4)
    for item in load_items(run):
        add_rating(run, "dr-demir", item["item"], "a")
    write_results(run)
    (event,) = [e for e in Ledger(default_ledger_path()).entries() if e["event"] == "human_eval"]
    assert event["data"]["ratings"] == 4 and "ratings.jsonl" in event["inputs"]
    assert collect(run)["human"]["ratings"] == 4
    _, html = build_report(run)
    page = html.read_text()
    assert 'id="human"' in page and "dr-demir" in page and "pooled" in page


def test_against_another_run(tmp_path):
    run, other = evaluated_run(tmp_path), evaluated_run(tmp_path, name="run-b")
    export_set(run, 6, against=other)
    key = key_of(run)
    assert key["systems"] == {"x": "run-support", "y": "run-b"}
    items = load_items(run)
    assert all({i["answer_a"].split()[0], i["answer_b"].split()[0]} == {"ayarlı"} for i in items)


def test_bad_input_is_refused_clearly(tmp_path):
    run = evaluated_run(tmp_path)
    with pytest.raises(AyarError, match="no human-evaluation set"):
        results(run)
    export_set(run, 3)
    with pytest.raises(AyarError, match="no ratings yet"):
        results(run)
    with pytest.raises(AyarError, match="verdict"):
        add_rating(run, "alice", "h0001", "maybe")
    with pytest.raises(AyarError, match="not in"):
        add_rating(run, "alice", "h9999", "a")
    with pytest.raises(AyarError, match="rater"):
        add_rating(run, "alice smith", "h0001", "a")
    assert len(add_rater(run, "ali")) > 16 and "ali" in rater_tokens(run)
    with pytest.raises(AyarError, match="already"):
        add_rater(run, "ali")
    bad = tmp_path / "bad.csv"
    bad.write_text("item,verdict\nh0001,a\nh0002,perhaps\nh7777,b\n")
    done = subprocess.run([sys.executable, "-m", "ayar.cli", "eval", "human", "import", str(run), str(bad),
                           "--rater", "ali"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "line 3" in done.stderr and "line 4" in done.stderr
    assert not (run / "eval" / "human" / "ratings.jsonl").exists()  # nothing imported
    no_eval = tmp_path / "fresh"
    no_eval.mkdir()
    done = subprocess.run([sys.executable, "-m", "ayar.cli", "eval", "human", "export", str(no_eval)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "ayar eval" in done.stderr and "Traceback" not in done.stderr


def test_ayar_eval_still_takes_a_run_folder_first_or_after_its_options(tmp_path):
    for args in (["eval", str(tmp_path / "none")], ["eval", "--set", "n=1", str(tmp_path / "none")]):
        done = subprocess.run([sys.executable, "-m", "ayar.cli", *args], capture_output=True, text=True)
        assert done.returncode == 2 and "cannot read the run's recipe" in done.stderr, done.stderr
