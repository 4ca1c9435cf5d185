"""`ayar synth` on the command line: a run, the summary line, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from synth_fake import PROMPTS, FakeTeacher, teacher, user_text, write_jsonl, write_recipe
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError, RecipeError
from ayar.recipe import load_recipe

runner = CliRunner()


@pytest.fixture
def fake():
    server = FakeTeacher(lambda body: (200, f"{user_text(body)} Siparişiniz yolda, teşekkür ederiz."))
    yield server
    server.close()


def synth(fake, **kw) -> dict:
    return {"teacher": teacher(fake, model="gpt-4o-mini"), "task": "answer", "input": "prompts.jsonl",
            "privacy": {"redact_outputs": False}, **kw}


def test_synth_command_runs_and_reruns_from_the_cache(tmp_path, fake):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    recipe = write_recipe(tmp_path, synth(fake))
    first = runner.invoke(app, ["synth", str(recipe)])
    assert first.exit_code == 0, first.output
    assert "synth answer: 6 records, 0 rejected (none); 6 requests, 0 from the cache" in first.output
    assert "estimated cost" in first.output
    again = runner.invoke(app, ["synth", str(recipe)])
    assert "6 requests, 6 from the cache" in again.output and "USD in all, 0.0000 this run" in again.output
    assert len(fake.requests) == 6
    lines = (tmp_path / "data" / "synth" / "synthetic.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6 and all(json.loads(x)["meta"]["synthetic"]["teacher"] == "gpt-4o-mini" for x in lines)


def test_recipe_without_synth_section(tmp_path):
    recipe = write_recipe(tmp_path, None)
    result = runner.invoke(app, ["synth", str(recipe)])
    assert isinstance(result.exception, AyarError) and "no `synth:` section" in str(result.exception)
    wrong = runner.invoke(app, ["synth", str(recipe), str(recipe)])
    assert "did you mean `ayar synth pairs" in str(wrong.exception)


def test_recipe_errors_name_the_key_and_line(tmp_path, fake):
    recipe = write_recipe(tmp_path, synth(fake, teacher={**teacher(fake), "concurency": 2, "requests_per_minute": 0}))
    with pytest.raises(RecipeError) as err:
        load_recipe(recipe)
    text = str(err.value)
    assert "synth.teacher.concurency: unknown key; did you mean 'concurrency'?" in text
    assert "synth.teacher.requests_per_minute: must be >= 1, got 0" in text and "(line " in text


def test_bad_input_exits_2_without_a_traceback(tmp_path, fake):
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "iyi"}\nnot json\n', encoding="utf-8")
    recipe = write_recipe(tmp_path, synth(fake))
    done = subprocess.run([sys.executable, "-m", "ayar.cli", "synth", str(recipe)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert "prompts.jsonl:2" in done.stdout + done.stderr and fake.requests == []


def test_synth_pairs_command(tmp_path, fake):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:2])
    recipe = write_recipe(tmp_path, {"teacher": teacher(fake), "privacy": {"redact_outputs": False},
                                     "pairs": {"prompts": "prompts.jsonl", "k": 2, "scorer": "regex",
                                               "regex": "Sipariş 0", "min_gap": 1}})
    result = runner.invoke(app, ["synth", "pairs", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "synth pairs: 0 pairs from 2 prompts (k=2, scorer regex); skipped: gap_too_small 2" in result.output
    missing = runner.invoke(app, ["synth", "pairs"])
    assert "needs the recipe" in str(missing.exception)


def test_outputs_never_overwrite_an_input(tmp_path, fake):
    (tmp_path / "data" / "synth").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "synth" / "synthetic.jsonl", PROMPTS)
    recipe = write_recipe(tmp_path, synth(fake, input="data/synth/synthetic.jsonl"))
    result = runner.invoke(app, ["synth", str(recipe)])
    assert isinstance(result.exception, AyarError)
    assert "would overwrite the synth.input" in str(result.exception) and fake.requests == []
