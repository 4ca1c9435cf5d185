"""The run report from a real tiny run (prepare with canaries -> LoRA SFT -> forgetting and memorisation),
plus fabricated comparison, judge, preference, example and extra-panel files."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest
import yaml
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import AyarError
from ayar.eval.report import build_report, collect
from helpers import write_jsonl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('x')</script>"


def _orders(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{i} numaralı siparişim nerede?"},
                          {"role": "assistant", "content": f"{i} numaralı sipariş {i % 7 + 1} gün içinde gelir."}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_llama):
    from ayar.data.prepare import prepare
    from ayar.data.prepare_config import PrepareSection
    from ayar.eval.forgetting import ForgettingSection, run_forgetting
    from ayar.eval.memorisation import MemorisationSection, run_memorisation
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    folder = tmp_path_factory.mktemp("report")
    write_jsonl(folder / "orders.jsonl", _orders(80))
    prepare(PrepareSection(sources=[{"path": "orders.jsonl"}], pii=None, output_dir="data",
                           dedup={"exact": False, "near": False}, canaries={"count": 2, "repeats": 5}),
            folder, show_progress=False)
    recipe = {"model": {"path": str(tiny_llama), "dtype": "fp32"},
              "data": {"train": "data/train.jsonl", "val": "data/val.jsonl", "max_length": 96},
              "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},
              "train": {"learning_rate": 1e-2, "max_steps": 12, "micro_batch_size": 8, "precision": "fp32",
                        "log_every": 2, "eval_every": 6, "tracking": "none"},
              "output_dir": "run"}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    trained = train_from_recipe(load_recipe(folder / "recipe.yaml"))
    run = folder / "run"
    model = trained.model.eval()
    run_forgetting(run, ForgettingSection(), model=model, tokenizer=trained.tokenizer)
    run_memorisation(run, MemorisationSection(candidates=100, controls=2, max_records=20, prefix_tokens=8,
                                              continuation_tokens=8), model=model, tokenizer=trained.tokenizer)
    write_fabricated(run / "eval")
    return run


def write_fabricated(eval_dir) -> None:
    comparison = {
        "dataset": "data/test.jsonl", "n": 3, "models": {"base": "tiny", "tuned": "tiny + adapter"},
        "generation": {"max_new_tokens": 64, "temperature": 0.0},
        "metrics": [
            {"name": "exact_match", "description": "identical to the reference", "higher_is_better": True,
             "base": 0.1, "tuned": 0.6, "diff": 0.5, "ci95": [0.3, 0.7]},
            {"name": "chrf", "description": "character n-gram F-score", "higher_is_better": True,
             "base": 20.0, "tuned": 21.0, "diff": 1.0, "ci95": [-2.0, 4.0]},
            {"name": "perplexity", "description": "of the references", "higher_is_better": False,
             "base": 40.0, "tuned": 9.5, "diff": -30.5, "ci95": None},
        ],
        "classification": {"labels": ["giyim", "ev", "(other)"], "confusion_base": [[1, 0, 1], [0, 0, 1], [0, 0, 0]],
                           "confusion_tuned": [[2, 0, 0], [0, 1, 0], [0, 0, 0]]},
    }
    (eval_dir / "comparison.json").write_text(json.dumps(comparison), encoding="utf-8")
    examples = [{"id": f"test.jsonl:{i}", "prompt": [{"role": "user", "content": f"Soru {i} {EVIL}"}],
                 "reference": "Cevap & açıklama", "base": "bilmiyorum", "tuned": f"Cevap {EVIL}",
                 "scores": {"base": {"exact_match": 0.0}, "tuned": {"exact_match": 1.0}}} for i in range(25)]
    write_jsonl(eval_dir / "examples.jsonl", examples)
    judge = {"judge_model": "judge-x", "n_pairs": 10, "win": 6, "tie": 1, "loss": 3, "win_rate": 0.6,
             "tie_rate": 0.1, "loss_rate": 0.3, "ci95": {"win": [0.3, 0.9], "tie": [0.0, 0.3], "loss": [0.1, 0.6]},
             "failures": 0, "unparsable": 1, "position_consistency": 0.8}
    (eval_dir / "judge.json").write_text(json.dumps(judge), encoding="utf-8")
    preference = {"n_pairs": 40, "base": {"reward_accuracy": 0.5, "margin": 0.0, "formal_share": 0.35},
                  "tuned": {"reward_accuracy": 0.9, "margin": 2.5, "formal_share": 0.95}}
    (eval_dir / "preference.json").write_text(json.dumps(preference), encoding="utf-8")
    style = {"register": {"formal_share": {"base": 0.35, "tuned": 0.95}}, "note": f"siz/sen {EVIL}"}
    (eval_dir / "style.json").write_text(json.dumps(style), encoding="utf-8")


class Page(HTMLParser):
    """Collects start tags, their attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_is_self_contained_and_escaped(run_dir):
    json_path, html_path = build_report(run_dir)
    assert (json_path, html_path) == (run_dir / "report.json", run_dir / "report.html")
    page_text = html_path.read_text(encoding="utf-8")
    page = Page()
    page.feed(page_text)
    page.close()
    names = [t for t, _ in page.tags]
    assert names[:2] == ["html", "head"] and "body" in names
    sections = {a["id"] for t, a in page.tags if t == "section"}
    assert {"training", "comparison", "judge", "preference", "forgetting", "memorisation", "examples",
            "extra-0"} <= sections
    # loss curve, metric bars, judge, perplexity, exposures
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 5
    for src in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix):], validate=True).startswith(PNG_SIGNATURE)
    assert "http://" not in page_text and "https://" not in page_text
    assert all(a["href"].startswith("#") for t, a in page.tags if "href" in a)
    assert "script" not in names and "<script" not in page_text.lower()  # the replies' <script> is text
    assert "&lt;script&gt;" in page_text
    text = "".join(page.text)
    assert EVIL in text  # shown to the reader, as text
    assert "Cevap & açıklama" in text and "20 of 25 examples" in text
    assert "not run" not in text  # every panel had its input


def test_report_json_holds_the_figures(run_dir):
    build_report(run_dir)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert report["training"]["loss"] == [[m["step"], m["loss"]] for m in metrics]
    assert report["training"]["eval_loss"] == [[m["step"], m["eval_loss"]] for m in metrics if "eval_loss" in m]
    assert [s for s, _ in report["training"]["eval_loss"]] == [6, 12]
    assert report["run"]["steps"] == 12 and report["run"]["method"] == "sft"
    assert report["comparison"]["metrics"][0]["ci95"] == [0.3, 0.7]
    assert report["judge"]["win"] == 6 and report["preference"]["tuned"]["formal_share"] == 0.95
    assert len(report["examples"]) == 20 and report["examples_total"] == 25
    assert report["extra"] == {"style": json.loads((run_dir / "eval/style.json").read_text())}
    assert report["problems"] == []

    forgetting = report["forgetting"]  # written by run_forgetting on the real run
    assert set(forgetting) == {"dataset", "base_ppl", "tuned_ppl", "relative_change", "threshold", "flag"}
    assert forgetting["relative_change"] == pytest.approx(
        (forgetting["tuned_ppl"] - forgetting["base_ppl"]) / forgetting["base_ppl"], abs=1e-3)
    memorisation = report["memorisation"]  # written by run_memorisation, canaries found beside train.jsonl
    manifest = json.loads((run_dir.parent / "data/manifest.json").read_text())
    canaries = memorisation["canaries"]
    assert len(canaries["exposures"]) == 2 and canaries["repeats"] == 5
    assert canaries["template"] == manifest["canaries"]["template"]
    assert memorisation["inputs"]["canaries_manifest"] == str(run_dir.parent / "data/manifest.json")
    assert memorisation["membership"]["n_train"] == 20 and memorisation["membership"]["n_heldout"] > 0
    assert 0.0 <= memorisation["membership"]["loss_auc"] <= 1.0
    assert memorisation["regurgitation"]["prefix_tokens"] == 8


def test_missing_inputs_say_not_run_and_bad_files_are_listed(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\nnot json\n{"step": 2, "loss": 2.0}\n')
    (tmp_path / "eval/judge.json").write_text("{broken", encoding="utf-8")
    _, html_path = build_report(tmp_path)
    text = html_path.read_text(encoding="utf-8")
    for panel in ("Comparison", "LLM judge", "Preference evaluation", "Forgetting check", "Memorisation audit",
                  "Example generations"):
        assert f"{panel} (eval/" in text
    assert text.count(": not run.") == 6  # training has its metrics.jsonl
    report = collect(tmp_path)
    assert report["training"]["loss"] == [[1, 2.5], [2, 2.0]]
    assert report["judge"] is None
    (judge, metrics) = report["problems"]
    assert judge.startswith("judge.json: not valid JSON") and metrics == "metrics.jsonl:2: not valid JSON; line skipped"
    assert "could not be read" in text


def test_a_file_of_the_wrong_shape_is_listed_not_fatal(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval/memorisation.json").write_text('{"canaries": {"exposures": "x"}, "membership": 3}')
    (tmp_path / "eval/forgetting.json").write_text('{"base_ppl": "a", "relative_change": "b", "threshold": 0.1}')
    json_path, html_path = build_report(tmp_path)
    problems = json.loads(json_path.read_text())["problems"]
    assert [p.split(":")[0] for p in problems] == ["forgetting.json", "memorisation.json"]
    assert "Not drawn" in html_path.read_text(encoding="utf-8")


def test_cli_rebuilds_the_report(run_dir):
    (run_dir / "report.html").unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").is_file()
    missing = CliRunner().invoke(app, ["report", str(run_dir / "nope")])
    assert isinstance(missing.exception, AyarError) and "not a folder" in str(missing.exception)
