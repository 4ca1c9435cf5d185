"""The workbench's endpoints through FastAPI's test client: pages, JSON, jobs, rating, chat, and access."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from ui_helpers import fake_examples, write_recipe

from ayar.errors import AyarError
from ayar.workbench.app import create_app
from ayar.workbench.auth import check_bind

TOKEN = "ui-token-0123456789"


@pytest.fixture(scope="module")
def client(workspace):
    with TestClient(create_app(workspace), base_url="http://127.0.0.1:7860") as c:
        yield c


def test_runs_table_lists_finished_runs_with_filter_and_sort(client):
    page = client.get("/")
    assert page.status_code == 200 and "runs/run-a" in page.text and "runs/run-b" in page.text
    assert 'class="status-finished"' in page.text and "exact_match: 0.1 -&gt; 0.4" in page.text
    assert "runs/run-b" not in client.get("/", params={"q": "run-a"}).text
    assert client.get("/", params={"sort": "name"}).text.index("runs/run-a") < \
        client.get("/", params={"sort": "name"}).text.index("runs/run-b")
    rows = client.get("/api/runs").json()
    run_a = next(r for r in rows if r["name"] == "runs/run-a")
    assert run_a["status"] == "finished" and run_a["step"] == 3 and run_a["method"] == "sft"


def test_run_page_shows_curve_recipe_card_and_ledger(client, workspace):
    from ayar.govern.record import ledger_for_run

    run = workspace / "runs" / "run-a"
    ledger_for_run(run).append("eval", {"run_dir": str(run.resolve())})
    page = client.get("/runs/runs/run-a")
    assert page.status_code == 200
    for text in ("<polyline", "learning_rate", "40 conversations", "<td>eval</td>", "Chat: base vs tuned"):
        assert text in page.text, text
    svg = client.get("/runs/runs/run-a/curve.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and 'data-points="3"' in svg.text
    metrics = client.get("/api/runs/runs/run-a/metrics").json()
    assert metrics["status"] == "finished" and [p[0] for p in metrics["loss"]] == [1, 2, 3]
    assert client.get("/runs/runs/nope").status_code == 404
    assert client.get("/runs/../../etc").status_code == 404


def test_the_report_page_serves_report_html(client, workspace):
    from ayar.eval.report import build_report

    run = workspace / "runs" / "run-b"
    (run / "report.html").unlink(missing_ok=True)
    assert client.get("/runs/runs/run-b/report").status_code == 404
    build_report(run)
    page = client.get("/runs/runs/run-b/report")
    assert page.status_code == 200 and "ayar report: run-b" in page.text
    assert 'href="/runs/runs/run-b/report"' in client.get("/runs/runs/run-b").text


def test_compare_diffs_recipes_and_overlays_curves(client):
    page = client.get("/compare", params=[("run", "runs/run-a"), ("run", "runs/run-b")])
    assert page.status_code == 200
    assert "train.learning_rate" in page.text and "0.005" in page.text and "0.01" in page.text
    assert page.text.count('<polyline class="series"') == 2 and "exact_match" in page.text
    one = client.get("/compare", params={"run": "runs/run-a"})
    assert one.status_code == 400 and "2 to 4 runs" in one.text


@pytest.mark.slow
def test_launch_checks_the_recipe_and_trains_in_the_background(client, workspace, tiny_llama):
    write_recipe(workspace, tiny_llama, "launch.yaml", "runs/launched", steps=2)
    (workspace / "broken.yaml").write_text("model: {path: x}\noutput_dir: y\ntrain: {learnin_rate: 1}\n")
    page = client.get("/launch")
    assert "launch.yaml" in page.text and "broken.yaml" in page.text
    broken = client.get("/launch", params={"recipe": "broken.yaml"})
    assert "learnin_rate" in broken.text and 'id="start"' not in broken.text
    checked = client.get("/launch", params={"recipe": "launch.yaml"})
    assert '<pre id="check-result">ok</pre>' in checked.text and 'id="plan"' in checked.text
    assert client.post("/launch", data={"recipe": "broken.yaml"}).status_code == 400
    started = client.post("/launch", data={"recipe": "launch.yaml"}, follow_redirects=False)
    assert started.status_code == 303
    job_id = started.headers["location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 240
    while client.get("/api/jobs").json()[0]["status"] in ("running", "cancelling"):
        assert time.monotonic() < deadline, "the launched training did not finish"
        time.sleep(0.5)
    job = client.get(f"/jobs/{job_id}")
    assert "finished" in job.text, job.text
    rows = {r["name"]: r for r in client.get("/api/runs").json()}
    assert rows["runs/launched"]["status"] == "finished" and rows["runs/launched"]["step"] == 2
    assert client.post("/launch", data={"recipe": "../outside.yaml"}).status_code == 400


def test_a_recipe_from_the_schema_form_is_checked_like_ayar_check(client, workspace, tiny_llama):
    import yaml

    from ayar.recipe import RecipeError, load_recipe

    form = client.get("/launch/new")
    for field in ('name="model.path"', 'name="train.learning_rate" id="train.learning_rate" value="0.0002"',
                  '<option value="dora"', 'name="adapter.rslora"', "Peak learning rate of AdamW."):
        assert field in form.text, field
    bad = {"recipe_name": "bad-form", "model.path": str(tiny_llama), "data.train": "data/missing.jsonl",
           "output_dir": "runs/form", "train.learning_rate": "fast"}
    answer = client.post("/launch/new", data=bad)
    (workspace / "same.yaml").write_text(yaml.safe_dump({"model": {"path": str(tiny_llama)},
                                                         "data": {"train": "data/missing.jsonl"},
                                                         "output_dir": "runs/form", "train": {"learning_rate": "fast"}}))
    with pytest.raises(RecipeError) as expected:
        load_recipe(workspace / "same.yaml", [], check_files=True)
    (workspace / "same.yaml").unlink()
    assert answer.status_code == 400 and not (workspace / "bad-form.yaml").exists()
    for problem in expected.value.problems:  # the same messages as `ayar check`
        assert problem.replace("&", "&amp;").replace("'", "&#39;").replace('"', "&#34;") in answer.text, problem
    good = {**bad, "recipe_name": "good-form", "data.train": "data/train.jsonl", "train.learning_rate": "0.001",
            "train.max_steps": "2", "adapter.rslora": "on", "train.scheduler": "cosine"}
    saved = client.post("/launch/new", data=good, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/launch?recipe=good-form.yaml"
    written = yaml.safe_load((workspace / "good-form.yaml").read_text())
    assert written == {"output_dir": "runs/form", "model": {"path": str(tiny_llama)},
                       "data": {"train": "data/train.jsonl"}, "adapter": {"rslora": True},
                       "train": {"learning_rate": 0.001, "max_steps": 2}}  # only what differs from the defaults
    assert '<pre id="check-result">ok</pre>' in client.get(saved.headers["location"]).text
    assert client.post("/launch/new", data=good).status_code == 400  # the name is taken


@pytest.mark.slow
def test_cancel_checkpoints_and_stops(client, workspace, tiny_llama):
    write_recipe(workspace, tiny_llama, "long.yaml", "runs/long", steps=100_000, save_every=100_000)
    job_id = client.post("/launch", data={"recipe": "long.yaml"},
                         follow_redirects=False).headers["location"].rsplit("/", 1)[1]
    metrics = workspace / "runs" / "long" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    assert client.get("/api/runs").json()[0]["status"] == "running"
    client.post(f"/jobs/{job_id}/cancel")
    while client.get("/api/jobs").json()[0]["status"] == "cancelling":
        assert time.monotonic() < deadline + 60
        time.sleep(0.2)
    assert client.get("/api/jobs").json()[0]["status"] == "cancelled"
    assert list((workspace / "runs" / "long").glob("checkpoints/*")), "no checkpoint to resume from"


@pytest.mark.slow
def test_a_run_page_starts_an_export_job(client, workspace):
    started = client.post("/runs/runs/run-b/jobs", data={"kind": "export"}, follow_redirects=False)
    assert started.status_code == 303
    job_id = started.headers["location"].rsplit("/", 1)[1]
    deadline = time.monotonic() + 240
    while (status := next(j for j in client.get("/api/jobs").json() if j["id"] == job_id)["status"]) == "running":
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.5)
    assert status == "finished", client.get(f"/jobs/{job_id}").text
    assert (workspace / "runs" / "run-b" / "export" / "adapter" / "adapter_config.json").is_file()
    assert client.post("/runs/runs/run-b/jobs", data={"kind": "rm"}).status_code == 400


def test_rating_round_trip_is_blinded(client, workspace):
    from ayar.eval.human import export_set, rater_tokens
    from ayar.eval.human_results import results

    run = workspace / "runs" / "run-a"
    export_set(run, 4, raters=["alice"], seed=5, overwrite=True)
    key = json.loads((run / "eval" / "human" / "key.json").read_text())["items"]
    link = f"/rate/runs/run-a/{rater_tokens(run)['alice']}"
    chosen = {}
    for _ in range(4):
        page = client.get(link)
        for hidden in ("run-a", "tuned", "base", "ex0", "ex1", "<a "):  # no name, no side, no link out
            assert hidden not in page.text.replace(link, ""), hidden
        item = page.text.split('name="item" value="')[1].split('"')[0]
        verdict = "a" if key[item]["a"] == "x" else "both_bad"  # X wins where it is A; both bad elsewhere
        chosen[item] = verdict
        assert client.post(link, data={"item": item, "verdict": verdict}, follow_redirects=False).status_code == 303
    assert 'id="finished"' in client.get(link).text
    summary = results(run)["per_rater"]["alice"]
    wins = sum(v == "a" for v in chosen.values())
    assert (summary["win"], summary["tie_bad"], summary["loss"]) == (wins, 4 - wins, 0)
    assert client.get("/rate/runs/run-a/not-a-token").status_code == 404
    assert client.post("/runs/runs/run-a/raters", data={"rater": "bob"}, follow_redirects=False).status_code == 303
    page = client.get("/runs/runs/run-a").text
    assert f"/rate/runs/run-a/{rater_tokens(run)['bob']}" in page and link in page
    assert client.post("/runs/runs/run-a/raters", data={"rater": "bob"}).status_code == 400
    assert client.post("/runs/runs/run-a/human/results", follow_redirects=False).status_code == 303
    assert "alice" in client.get("/runs/runs/run-a").text.split('id="human"')[1].split("</pre>")[0]
    assert json.loads((run / "eval" / "human.json").read_text())["ratings"] == 4
    assert client.post(link, data={"item": "h0001", "verdict": "maybe"}).status_code == 400


def test_chat_streams_from_the_runs_own_server(client):
    page = client.get("/runs/runs/run-a/chat")
    assert page.status_code == 200
    api = page.text.split('data-api="')[1].split('"')[0]
    models = page.text.split('data-models="')[1].split('"')[0].split("|")
    assert models[1] == "run-a"
    body = {"model": models[1], "messages": [{"role": "user", "content": "Ürün: mavi masa"}], "stream": True,
            "temperature": 0, "max_tokens": 5}
    with client.stream("POST", f"{api}/v1/chat/completions", json=body) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]" and len(lines) >= 3
    assert client.get(f"{api}/admin/adapters").status_code == 403


def test_token_login_beyond_loopback(workspace):
    from ayar.eval.human import export_set, rater_tokens

    run_b = workspace / "runs" / "run-b"
    fake_examples(run_b)
    export_set(run_b, 2, raters=["carol"], overwrite=True)
    app = create_app(workspace, token=TOKEN, loopback=False)
    with TestClient(app, base_url="http://10.0.0.5:7860") as c:
        first = c.get("/", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/login"
        assert 'name="token"' in c.get("/login").text
        for path in ("/runs/runs/run-a", "/compare?run=runs/run-a&run=runs/run-b", "/launch", "/launch/new",
                     "/runs/runs/run-a/chat", "/runs/runs/run-a/report"):
            assert c.get(path, follow_redirects=False).status_code == 303, path
        for path in ("/launch", "/launch/new", "/runs/runs/run-a/jobs", "/runs/runs/run-a/raters",
                     "/runs/runs/run-a/human/results", "/jobs/1/cancel"):
            assert c.post(path, data={"kind": "eval"}, follow_redirects=False).status_code == 401, path
        # A rater's link is its own credential, and shows the blinded item only.
        assert c.get(f"/rate/runs/run-b/{rater_tokens(run_b)['carol']}").status_code == 200
        assert c.get("/api/runs").status_code == 401
        assert c.get("/runs/runs/run-a/curve.svg", follow_redirects=False).status_code == 303
        assert c.post("/login", data={"token": "wrong"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        logged = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert logged.status_code == 303 and "httponly" in logged.headers["set-cookie"].lower()
        assert c.get("/api/runs").status_code == 200 and c.get("/").status_code == 200
        assert c.get("/static/app.js").status_code == 200


def test_other_sites_and_hosts_are_refused(client):
    assert client.get("/", headers={"host": "evil.example:7860"}).status_code == 403  # DNS rebinding
    forged = client.post("/launch", data={"recipe": "launch.yaml"}, headers={"origin": "http://evil.example"})
    assert forged.status_code == 403


def test_binding_beyond_loopback_needs_a_token(tmp_path):
    check_bind("127.0.0.1", has_token=False, insecure=False)
    check_bind("0.0.0.0", has_token=True, insecure=False)
    with pytest.raises(AyarError, match="--token-env"):
        check_bind("0.0.0.0", has_token=False, insecure=False)
    with pytest.raises(AyarError, match="not a folder"):
        create_app(tmp_path / "missing")


def test_ui_cli_refuses_an_open_workbench_beyond_loopback(tmp_path):
    for args, message in ((["ui", "--host", "0.0.0.0"], "--token-env"),
                          (["ui", "--token-env", "AYAR_TEST_UNSET_TOKEN"], "AYAR_TEST_UNSET_TOKEN"),
                          (["ui", "--workspace", str(tmp_path / "none")], "not a folder")):
        done = subprocess.run([sys.executable, "-m", "ayar.cli", *args], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
