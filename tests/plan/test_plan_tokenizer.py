"""`ayar plan`'s tokenizer figures on the training text, and the extension advice they lead to.

Two tokenizers built by hand on the same pre-tokeniser (whitespace, then full stops apart), so
their counts can be derived by hand: a word-level one (every word one token) and a
character-level one (every letter one token, the most a tokenizer can fragment).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from ayar.cli import app
from ayar.plan import tokenizer as plan_tok
from ayar.plan.advice import EXTENSION_WORTH
from ayar.plan.data import _count_records, _picked, sample_texts
from ayar.tokenizer.report import Efficiency, load_texts, measure, open_tokenizer

runner = CliRunner()
SENTENCES = ["İstanbul'da güzel bir gün.", "Yarın gelemeyeceğim.", "Işık ılık."]
# words: İstanbul'da güzel bir gün | Yarın gelemeyeceğim | Işık ılık = 4 + 2 + 2 = 8; "." is not a word
LETTERS = sum(len(w) for s in SENTENCES for w in re.findall(r"[^\W\d_]+(?:'[^\W\d_]+)*", s))  # 11+5+3+3+5+13+4+4
TEMPLATE = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"


def _hand_tokenizer(kind: str, text: str):
    """A word-level or character-level fast tokenizer covering every word/letter of ``text``, with ``<eos>``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = text.replace(".", " . ").split() if kind == "word" else sorted(set(text) - {" "})
    vocab = {"<unk>": 0, "<eos>": 1, **{p: i + 2 for i, p in enumerate(dict.fromkeys(pieces))}}
    model = models.WordLevel(vocab, unk_token="<unk>") if kind == "word" else \
        models.BPE(vocab, [], unk_token="<unk>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(".", behavior="isolated")])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def _recipe(tmp_path: Path, tiny_llama, kind: str, lines: list[str]) -> str:
    """A pretraining recipe on ``lines`` for the tiny Llama's config with a hand-built tokenizer beside it."""
    folder = tmp_path / f"model-{kind}"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_llama) / name, folder / name)
    tok = _hand_tokenizer(kind, " ".join(SENTENCES))
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = {"method": "pretrain", "model": {"path": str(folder)}, "data": {"train": "train.txt", "max_length": 8},
              "train": {"max_steps": 2, "tracking": "none", "learning_rate": 1e-4}, "output_dir": "run"}
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return str(path)


def _plan_json(recipe: str) -> dict:
    out = runner.invoke(app, ["plan", recipe, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_plan_figures_equal_the_report_modules(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    recipe = _recipe(tmp_path, tiny_llama, "word", SENTENCES)
    t = _plan_json(recipe)["tokenizer"]
    figures = t["figures"]
    # by hand: 8 words, each one token; 3 full stops: 11 tokens
    assert (figures["texts"], figures["words"], figures["word_tokens"], figures["tokens"]) == (3, 8, 8, 11)
    assert figures["fertility"] == 1.0 and figures["split_3plus"] == 0.0 and figures["byte_fallback_rate"] == 0.0
    assert figures["chars"] == sum(map(len, SENTENCES))
    folder = str(tmp_path / "model-word")
    report = measure(open_tokenizer(folder), load_texts(tmp_path / "train.txt"), name=folder,
                     top=plan_tok.TOP).to_dict()
    assert figures == {k: v for k, v in report.items() if k not in ("parameters", "token_multiplier",
                                                                     "cost_multiplier")}
    assert t["fragmenting"] is False and t["extension"] is None


def test_character_level_figures_by_hand():
    tok = _hand_tokenizer("char", " ".join(SENTENCES))
    e = measure(tok, SENTENCES)
    assert (e.words, e.word_tokens, e.tokens) == (8, LETTERS, LETTERS + 3)
    assert e.split_3plus == 1.0  # every word has 3+ letters


def test_fragmenting_tokenizer_gets_the_extension_advice(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("AYAR_HOME", str(tmp_path / "home"))
    lines = SENTENCES * 300  # 900 texts cycling the three: every 10th held out (90 texts, 240 words)
    char = _recipe(tmp_path, tiny_llama, "char", lines)
    plan = _plan_json(char)
    t = plan["tokenizer"]
    assert t["fragmenting"] is True and t["figures"]["fertility"] == round(LETTERS / 8, 3)
    x = t["extension"]
    assert x["learned_texts"] == 810 and x["heldout_texts"] == 90 and x["added"] > 0
    assert x["tokens_before"] == 30 * (LETTERS + 3)  # 30 of each sentence held out, one token per character
    assert x["token_reduction"] == round(1 - x["tokens_after"] / x["tokens_before"], 4) > EXTENSION_WORTH
    (advice,) = [a for a in plan["advice"] if a["rule"] == "fragmentation"]
    assert "ayar tokenizer extend" in advice["message"] and f"{x['token_reduction']:.0%}" in advice["message"]
    assert "estimate" in advice["message"] and "bench/results/tokenizer_extension.json" in advice["reason"]
    text = runner.invoke(app, ["plan", char])
    assert "tokens per word" in text.output and "fewer tokens on the other 90" in text.output

    (tmp_path / "w").mkdir()
    plan = _plan_json(_recipe(tmp_path / "w", tiny_llama, "word", lines))
    assert plan["tokenizer"]["fragmenting"] is False
    assert not [a for a in plan["advice"] if a["rule"] == "fragmentation"]


def _efficiency(fertility: float, split_3plus: float) -> Efficiency:
    return Efficiency("t", 1, 10, 10, 10, 10, fertility, 1.0, split_3plus, 0.0)


def test_fragmenting_depends_on_the_language():
    turkish = ["Siparişiniz yarın kargoya verilecek, teşekkür ederiz."]
    english = ["Your order ships tomorrow, thank you."]
    usual_for_turkish = _efficiency(2.0, 0.29)  # Gemma 3 on the bench's Turkish prose
    assert not plan_tok.fragmenting(usual_for_turkish, turkish)
    assert plan_tok.fragmenting(usual_for_turkish, english)
    assert plan_tok.fragmenting(_efficiency(3.88, 0.76), turkish)  # SmolLM2 on the same prose
    assert not plan_tok.fragmenting(_efficiency(1.1, 0.03), english)


def test_too_little_text_quotes_the_bench_instead():
    tok = _hand_tokenizer("char", " ".join(SENTENCES))
    fit = plan_tok.tokenizer_fit(tok, SENTENCES * 3)
    assert fit.fragmenting and fit.extension is None and "held-out words" in fit.note


def test_unmeasurable_text_is_a_note_not_an_error():
    tok = _hand_tokenizer("word", " ".join(SENTENCES))
    fit = plan_tok.tokenizer_fit(tok, ["123 456"])
    assert fit.efficiency is None and "no words" in fit.note
    assert fit.to_dict()["figures"] is None


def test_bench_figures_quoted_match_the_results_file():
    results = json.loads((Path(__file__).parents[2] / "bench" / "results" / "tokenizer_extension.json").read_text())
    by_model = {r["model"]: r for r in results["results"]}
    smol, gemma = by_model["smollm2-135m"], by_model["gemma-3-270m"]
    assert f"{smol['token_reduction']:.0%} fewer tokens for SmolLM2-135M ({smol['tokens_per_word']['base']:.2f}" \
        in plan_tok.BENCH
    assert f"{gemma['token_reduction']:.0%} for Gemma 3 270M ({gemma['tokens_per_word']['base']:.2f})" in plan_tok.BENCH
    assert f"up to {int(results['settings']['add']):,} tokens" in plan_tok.BENCH


def test_sample_texts_are_the_sampled_records(tmp_path):
    records = [{"messages": [{"role": "user", "content": f"soru {i}"}, {"role": "assistant", "content": f"yanıt {i}"}]}
               for i in range(50)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert sample_texts(str(path), sample=50) == load_texts(path)  # small file: all of it
    picked = _picked(len(_count_records(path)), 10, 3)
    assert sample_texts(str(path), sample=10, seed=3) == [t for i in picked for t in (f"soru {i}", f"yanıt {i}")]

