"""Metrics against hand-computed values and against sacrebleu; Turkish normalisation and tokenisation."""

from __future__ import annotations

import json
import math
import re

import pytest
import sacrebleu
import torch

from ayar.errors import AyarError
from ayar.eval.config import EvalSection
from ayar.eval.metrics import (
    METRICS,
    MetricInput,
    compute_scores,
    custom_score,
    lcs_length,
    normalise_text,
    register_metric,
    rouge_l_f,
    words,
)


def scores(predictions, references, **section) -> dict:
    batch = MetricInput(predictions, references, [{} for _ in predictions], EvalSection(**section))
    return {s.name: s for s in compute_scores(batch)}


# ----------------------------------------------------------------------------- exact match


def test_turkish_case_folding_and_normalisation():
    assert normalise_text("İSTANBUL") == "istanbul"
    assert normalise_text("IŞIK") == "ışık"
    assert normalise_text("Istanbul") == "ıstanbul"  # dotless capital I is ı in Turkish, so not "istanbul"
    assert normalise_text("i\u0307stanbul") == "istanbul"  # what str.lower() makes of "İstanbul"
    assert normalise_text("ﬁyat  \n\t listesi ") == "fiyat listesi"  # NFKC splits the ligature; spaces collapse


def test_exact_match_counts_by_hand():
    predictions = ["İSTANBUL", "IŞIK", "  Merhaba   dünya ", "Ilık", "Istanbul", "ﬁyat"]
    references = ["istanbul", "ışık", "merhaba dünya", "ılık", "istanbul", "fiyat"]
    got = scores(predictions, references, metrics=["exact_match"])["exact_match"]
    # Every pair matches except "Istanbul" / "istanbul" (I folds to ı): 5 of 6.
    assert got.per_example == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert got.value == pytest.approx(5 / 6)
    # Python's own lower() would wrongly match pair 5 and miss pair 2:
    assert "Istanbul".lower() == "istanbul" and "IŞIK".lower() != "ışık"


# ----------------------------------------------------------------------------- ROUGE-L


def test_lcs_by_hand():
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # BCBA (Cormen et al., LCS chapter)
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["x", "y"], ["x", "y"]) == 2


def test_rouge_tokens_keep_turkish_words():
    assert words("İstanbul'da güzel bir gün") == ["istanbul", "da", "güzel", "bir", "gün"]
    assert words("IŞIK, ılık rüzgâr") == ["ışık", "ılık", "rüzgâr"]


def test_rouge_l_by_hand():
    # prediction: istanbul çok güzel bir şehir (5 tokens); reference: istanbul güzel şehir (3 tokens).
    # LCS = istanbul güzel şehir = 3; P = 3/5, R = 3/3; F = 2 * 0.6 * 1 / 1.6 = 0.75.
    assert rouge_l_f("İstanbul çok güzel bir şehir", "istanbul güzel şehir") == pytest.approx(0.75)
    assert rouge_l_f("", "bir") == 0.0


def test_rouge_l_scores_words_an_ascii_tokenizer_drops():
    def ascii_tokens(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    # "Üç" (three) has no ASCII letter: an ASCII tokenizer sees no word at all and scores 0.
    assert ascii_tokens("Üç") == [] and ascii_tokens("üç") == []
    assert rouge_l_f("Üç", "üç") == 1.0
    got = scores(["Üç", "İstanbul çok güzel bir şehir"], ["üç", "istanbul güzel şehir"], metrics=["rouge_l"])
    assert got["rouge_l"].value == pytest.approx((1.0 + 0.75) / 2)


# ----------------------------------------------------------------------------- BLEU and chrF


PREDICTIONS = ["Kırmızı renkli bir ayakkabı satıyoruz.", "Mavi çanta stokta yok", "Siparişiniz yarın kargoda.",
               "tamamen farklı bir cümle"]
REFERENCES = ["Kırmızı renkli bir ayakkabı satıyoruz.", "Mavi çanta şu an stokta yok.",
              "Siparişiniz yarın kargoya verilecek.", "Gri bir masa lambası"]


def test_bleu_and_chrf_equal_sacrebleu_corpus_and_sentence_scores():
    got = scores(PREDICTIONS, REFERENCES, metrics=["bleu", "chrf"])
    assert got["bleu"].value == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score, abs=1e-9)
    assert got["chrf"].value == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score, abs=1e-9)
    for p, r, b, c in zip(PREDICTIONS, REFERENCES, got["bleu"].per_example, got["chrf"].per_example, strict=True):
        assert b == pytest.approx(sacrebleu.sentence_bleu(p, [r]).score)
        assert c == pytest.approx(sacrebleu.sentence_chrf(p, [r]).score)
    # The bootstrap aggregates a subset of rows: that must be the corpus score of that subset.
    rows = got["bleu"].stats[[0, 2, 2]]
    subset = [PREDICTIONS[i] for i in (0, 2, 2)], [[REFERENCES[i] for i in (0, 2, 2)]]
    assert got["bleu"].aggregate(rows) == pytest.approx(sacrebleu.corpus_bleu(*subset).score, abs=1e-9)
    rows = got["chrf"].stats[[1, 3]]
    subset = [PREDICTIONS[i] for i in (1, 3)], [[REFERENCES[i] for i in (1, 3)]]
    assert got["chrf"].aggregate(rows) == pytest.approx(sacrebleu.corpus_chrf(*subset).score, abs=1e-9)


def test_bleu_extremes_by_hand():
    assert scores(["bir iki üç dört beş"], ["bir iki üç dört beş"], metrics=["bleu"])["bleu"].value == pytest.approx(100)
    assert scores(["alfa beta"], ["gama delta"], metrics=["bleu"])["bleu"].value == 0.0


# ----------------------------------------------------------------------------- perplexity


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tiny_llama):
    from transformers import AutoModelForCausalLM

    from ayar.eval.likelihood import reference_nll
    from ayar.model.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()  # every logit 0: p = 1/V for every token
    prompts = [[{"role": "user", "content": "Ürün: mavi masa"}], [{"role": "user", "content": "Işık?"}]]
    references = ["mavi", "ılık bir gün"]
    nll = reference_nll(model, tokenizer, prompts, references)
    vocab = model.config.vocab_size
    for (total, count), reference in zip(nll, references, strict=True):
        # The reference's own tokens plus the end-of-turn token <|im_end|>.
        assert count == len(tokenizer(reference, add_special_tokens=False)["input_ids"]) + 1
        assert total == pytest.approx(count * math.log(vocab), rel=1e-5)
    got = scores(["-", "-"], references, metrics=["perplexity"])
    assert got["perplexity"].value is None  # no likelihoods: an endpoint
    batch = MetricInput(["-", "-"], references, [{}, {}], EvalSection(metrics=["perplexity"]), nll)
    (ppl,) = compute_scores(batch)
    assert ppl.value == pytest.approx(vocab, rel=1e-5) and not ppl.higher_is_better


def test_perplexity_pools_tokens_and_matches_full_logits(tiny_llama):
    from transformers import AutoModelForCausalLM

    from ayar.eval.likelihood import reference_nll
    from ayar.model.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_llama))
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts = [[{"role": "system", "content": "Kısa yanıt ver."}, {"role": "user", "content": "Renk?"}],
               [{"role": "user", "content": "Ürün: sarı kupa"}]]
    references = ["kırmızı", '{"renk": "sarı", "tür": "kupa"}']
    got = reference_nll(model, tokenizer, prompts, references)

    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for (total, count), prompt, reference in zip(got, prompts, references, strict=True):
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(head + reference + "<|im_end|>", add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
        assert ids[0, -1] == end
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)  # (seq, vocab)
        targets = ids[0, start:]
        expected = -logp[start - 1 : -1].gather(1, targets[:, None]).sum()
        assert count == len(targets)
        assert total == pytest.approx(float(expected), rel=1e-4)
    batch = MetricInput(["", ""], references, [{}, {}], EvalSection(metrics=["perplexity"]), got)
    (ppl,) = compute_scores(batch)
    pooled = math.exp((got[0][0] + got[1][0]) / (got[0][1] + got[1][1]))  # not the mean of two perplexities
    assert ppl.value == pytest.approx(pooled)
    assert ppl.per_example == pytest.approx([math.exp(t / n) for t, n in got])


# ----------------------------------------------------------------------------- structured output


STRUCT_PRED = ['{"renk": "mavi", "tür": "masa"}', '{"renk": "mavi", "tür": "kupa"}', "mavi bir masa",
               '{"renk": "mavi"}', '{"renk": "mor", "tür": "x"}']
STRUCT_REF = ['{"renk": "mavi", "tür": "masa"}', '{"renk": "mavi", "tür": "kupa"}', '{"renk": "gri", "tür": "masa"}',
              '{"renk": "mavi", "tür": "lamba"}', '{"renk": "mor"}']


def test_json_parse_rate_and_field_accuracy_by_hand():
    got = scores(STRUCT_PRED, STRUCT_REF, metrics=["json"])
    assert got["json_parse_rate"].value == pytest.approx(4 / 5)  # reply 3 is not JSON
    # renk: replies 1, 2, 4, 5 right, 3 unparsed -> 4/5.
    assert got["field_accuracy[renk]"].value == pytest.approx(4 / 5)
    # tür: counted where the reference has it (1-4): 1 and 2 right, 3 unparsed, 4 missing -> 2/4.
    assert got["field_accuracy[tür]"].value == pytest.approx(2 / 4)
    assert got["field_accuracy[tür]"].per_example == [1.0, 1.0, 0.0, 0.0, None]
    only = scores(STRUCT_PRED, STRUCT_REF, metrics=["json"], json_fields=["tür"])
    assert set(only) == {"json_parse_rate", "field_accuracy[tür]", "json_parse_rate_lenient",
                         "field_accuracy_lenient[tür]"}


def test_lenient_json_finds_the_object_inside_more_text():
    from ayar.eval.structured import parse_json_lenient

    assert parse_json_lenient('Cevap: {"a": 1} ve devamı {"b": 2}') == {"a": 1}  # the first object
    assert parse_json_lenient('{bozuk {"a": {"b": [1, "}"]}}') == {"a": {"b": [1, "}"]}}
    assert parse_json_lenient("[1, 2] düz metin") is None
    preds = ['{"renk": "mavi", "tür": "masa"}\nÜrün: başka bir örnek {"renk": "x"}', "yok", '{"renk": "gri"']
    refs = ['{"renk": "mavi", "tür": "masa"}', '{"renk": "mavi", "tür": "masa"}', '{"renk": "gri", "tür": "masa"}']
    got = scores(preds, refs, metrics=["json"])
    assert got["json_parse_rate"].value == 0.0  # a program reading the replies gets no object from any
    assert got["json_parse_rate_lenient"].value == pytest.approx(1 / 3)
    assert got["field_accuracy_lenient[renk]"].per_example == [1.0, 0.0, 0.0]


def test_stop_strings_cut_replies_before_the_first():
    from ayar.eval.generate import cut_at_stop

    assert cut_at_stop('{"a": 1}\n<start_of_turn>user', ["\n"]) == '{"a": 1}'
    assert cut_at_stop("abc ### def END", ["END", "###"]) == "abc "
    assert cut_at_stop("abc", ["x", ""]) == "abc"


def test_json_schema_validity_by_hand(tmp_path):
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "required": ["renk", "tür"], "properties": {"renk": {"type": "string"}, "tür": {"type": "string"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema), encoding="utf-8")
    got = scores(STRUCT_PRED, STRUCT_REF, metrics=["json_schema"], schema_file=str(tmp_path / "schema.json"))
    # Valid: 1, 2, 5; reply 3 is not JSON and reply 4 lacks "tür".
    assert got["json_schema_valid"].per_example == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert got["json_schema_valid"].value == pytest.approx(3 / 5)
    (tmp_path / "bad.json").write_text('{"type": 12}', encoding="utf-8")
    with pytest.raises(AyarError, match="not a valid JSON Schema"):
        scores(["{}"], ["{}"], metrics=["json_schema"], schema_file=str(tmp_path / "bad.json"))


# ----------------------------------------------------------------------------- classification


def test_classification_accuracy_macro_f1_and_confusion_by_hand():
    gold = ["olumlu", "olumlu", "olumsuz", "nötr", "olumsuz", "olumlu"]
    said = ["olumlu", "olumsuz", "olumsuz", "olumlu", None, "OLUMLU"]
    references = [f"Etiket: {g}" for g in gold]
    predictions = [f"Bence... Etiket: {s}" if s else "bilmiyorum" for s in said]
    got = scores(predictions, references, metrics=["classification"], label_regex=r"Etiket:\s*(\w+)")
    # Right: 1, 3, 6 ("OLUMLU" folds to "olumlu") -> 3/6.
    assert got["label_accuracy"].value == pytest.approx(0.5)
    # F1 = 2TP / (2TP + FP + FN): olumlu TP 2 FP 1 FN 1 -> 2/3; olumsuz TP 1 FP 1 FN 1 -> 1/2; nötr TP 0 FN 1 -> 0.
    assert got["macro_f1"].value == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    extra = got["label_accuracy"].extra
    assert extra["labels"] == ["nötr", "olumlu", "olumsuz", "(other)"]
    assert extra["confusion"] == [[0, 1, 0, 0],   # nötr -> olumlu
                                  [0, 2, 1, 0],   # olumlu -> olumlu x2, olumsuz
                                  [0, 0, 1, 1],   # olumsuz -> olumsuz, no label
                                  [0, 0, 0, 0]]


def test_classification_by_json_field():
    references = ['{"duygu": "olumlu"}', '{"duygu": "olumsuz"}', '{"konu": "x"}']
    predictions = ['{"duygu": "Olumlu", "not": 1}', "olumsuz", '{"duygu": "olumlu"}']
    got = scores(predictions, references, metrics=["classification"], label_field="duygu")
    # Example 3 has no reference label and is left out; 1 right, 2 unparsed -> 1/2.
    assert got["label_accuracy"].value == pytest.approx(0.5)
    assert got["label_accuracy"].per_example == [1.0, 0.0, None]
    assert got["label_accuracy"].extra["unlabelled"] == 1


# ----------------------------------------------------------------------------- custom metrics and registry


def test_custom_metric_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_eval_metrics.py").write_text(
        "def length_ratio(prediction, reference, example):\n"
        "    '''Reply length over reference length.'''\n"
        "    return len(prediction) / len(reference)\n"
        "length_ratio.higher_is_better = False\n"
        "def broken(prediction, reference, example):\n"
        "    return float('nan')\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    section = EvalSection(metrics=[], custom_metrics=["my_eval_metrics:length_ratio"])
    batch = MetricInput(["ab", "abcdef"], ["abcd", "abc"], [{"id": 1}, {"id": 2}], section)
    (got,) = compute_scores(batch)
    assert got.name == "my_eval_metrics:length_ratio" and got.description == "Reply length over reference length."
    assert got.value == pytest.approx((2 / 4 + 6 / 3) / 2) and got.higher_is_better is False
    with pytest.raises(AyarError, match="finite number"):
        custom_score("my_eval_metrics:broken", batch)
    with pytest.raises(AyarError, match="cannot import"):
        custom_score("no_such_module_xyz:f", batch)
    with pytest.raises(AyarError, match="no function"):
        custom_score("my_eval_metrics:missing", batch)


def test_registry_accepts_new_metrics_and_config_rejects_unknown_ones():
    from ayar.eval.metrics import mean_score

    with pytest.raises(ValueError, match="already registered"):
        register_metric("bleu", METRICS["bleu"])
    register_metric("reply_chars_test", lambda b: [mean_score("reply_chars", "characters", [len(p) for p in
                                                                                           b.predictions])])
    try:
        assert scores(["abc", "a"], ["x", "y"], metrics=["reply_chars_test"])["reply_chars"].value == 2.0
    finally:
        del METRICS["reply_chars_test"]
    with pytest.raises(ValueError, match="did you mean 'rouge_l'"):
        EvalSection(metrics=["rouge"])
