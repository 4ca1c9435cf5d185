"""Vocabulary extension on real models: fewer tokens for the same Turkish text, and no worse a model.

For each fetched model (``ayar model fetch smollm2-135m | gemma-3-270m``):

1. extend it with up to ``--add`` tokens learned from the training corpus (``ayar tokenizer extend``);
2. on held-out Turkish text (never learned from): tokens, tokens per word, words in 3+ pieces,
   before and after;
3. bits per character of the held-out text (natural log-loss of every token of each text
   after one context token, summed, over ln 2 and the characters: comparable across
   tokenizers because characters do not depend on them) for the base, the extended model
   as initialised, and both after the same short adaptation run (continued pretraining
   with LoRA; the extended model also trains its new embedding rows,
   ``adapter.train_embeddings: new``);
4. training tokens/s of those runs, and what 1M characters of Turkish cost to train on:
   tokens per 1M characters / tokens per second.

Corpora (see bench/data/README.md): training = ``bench/data/tr_prose_train.txt`` (our own
prose) + the demo's synthetic Turkish shop and support texts; held-out =
``bench/data/tr_prose_heldout.txt`` (our own prose, other sentences) + the forgetting
passages ``src/ayar/eval/data/general_tr.txt``.

Run: ``python bench/tokenizer_extension.py`` (``--help`` for settings). Results go to
``bench/results/tokenizer_extension.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
MODELS = ("smollm2-135m", "gemma-3-270m")
START = time.perf_counter()


def note(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.0f} s] {message}", file=sys.stderr, flush=True)


def lines(path: Path) -> list[str]:
    """Non-empty lines; the first line of our prose files is a note about the text, not prose."""
    text = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return text[1:] if path.parent == HERE / "data" else text


def corpora(work: Path, demo_texts: int) -> tuple[Path, Path, list[str]]:
    """Write the training corpus (txt and JSONL) and the held-out text; return (train.txt, heldout.txt, held)."""
    from ayar.demo.products import corpus_texts

    train = lines(HERE / "data" / "tr_prose_train.txt") + corpus_texts(seed=1, n=demo_texts)
    general = Path(str(resources.files("ayar.eval").joinpath("data/general_tr.txt")))
    held = lines(general) + lines(HERE / "data" / "tr_prose_heldout.txt")
    assert not set(train) & set(held), "training and held-out text overlap"
    (work / "train.txt").write_text("\n".join(train), encoding="utf-8")
    (work / "heldout.txt").write_text("\n".join(held), encoding="utf-8")
    with open(work / "train.jsonl", "w", encoding="utf-8") as fh:
        for text in train:
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return work / "train.txt", work / "heldout.txt", held


@torch.no_grad()
def bits_per_char(target: str, texts: list[str]) -> float:
    """Bits per character of ``texts`` under the model (or run) ``target``, in fp32."""
    from ayar.eval.generate import load_for_inference

    model, tok = load_for_inference(target, dtype="fp32")
    context = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    device = next(model.parameters()).device
    nats = 0.0
    for text in texts:
        ids = torch.tensor([[context, *tok(text, add_special_tokens=False)["input_ids"]]], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)  # (len-1, vocab)
        nats -= logp.gather(1, ids[0, 1:, None]).sum().item()
    return nats / math.log(2) / sum(len(t) for t in texts)


def adapt(model_dir: Path, work: Path, name: str, args, train_embeddings: str) -> tuple[Path, dict]:
    """A short continued-pretraining run with LoRA (and new embedding rows); returns (run folder, summary)."""
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {
        "method": "pretrain",
        "model": {"path": str(model_dir)},
        "data": {"train": str(work / "train.jsonl"), "max_length": args.max_length},
        "adapter": {"r": 16, "alpha": 32, "dropout": 0.0, "train_embeddings": train_embeddings},
        "train": {"learning_rate": args.lr, "max_steps": args.steps, "micro_batch_size": args.batch,
                  "log_every": args.steps, "tracking": "none", "warmup_ratio": 0.05, "seed": 0},
        "output_dir": str(folder / "run"),
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    train_from_recipe(load_recipe(folder / "recipe.yaml"), overwrite=True)
    summary = json.loads((folder / "run" / "summary.json").read_text())
    return folder / "run", summary


def tokenizer_figures(name: str, added: int, before, after, held: list[str]) -> dict:
    return {"model": name, "added": added, "heldout_chars": sum(len(t) for t in held),
            "tokens": {"base": before.tokens, "extended": after.tokens},
            "token_reduction": round(1 - after.tokens / before.tokens, 4),
            "tokens_per_word": {"base": before.fertility, "extended": after.fertility},
            "split_3plus": {"base": before.split_3plus, "extended": after.split_3plus},
            "bits_per_char": {}, "speed": {}}


def tokenizer_only(base: Path, train_txt: Path, held: list[str], args) -> dict:
    """The tokenisation figures alone: the extended tokenizer is built in memory, no model is loaded."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from ayar.tokenizer.extend import learn_extension
    from ayar.tokenizer.report import load_texts, measure, open_tokenizer

    base_tok = open_tokenizer(str(base))
    state, new_ids, _ = learn_extension(base_tok, load_texts(train_txt), args.add)
    ext_tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(state)))
    return tokenizer_figures(base.name, len(new_ids), measure(base_tok, held), measure(ext_tok, held), held)


def bench_model(name: str, work: Path, train_txt: Path, held_txt: Path, held: list[str], args) -> dict:
    from ayar.paths import models_dir
    from ayar.tokenizer.extend import extend
    from ayar.tokenizer.report import measure, open_tokenizer

    base = models_dir() / name
    ext = work / f"{name}-ext"
    note(f"{name}: extending by up to {args.add} tokens")
    if args.tokenizer_only:
        return tokenizer_only(base, train_txt, held, args)
    summary = extend(str(base), train_txt, args.add, ext, heldout=held_txt, force=True)
    note(f"{name}: extended; bits per character before adaptation")
    before, after = measure(open_tokenizer(str(base)), held), measure(open_tokenizer(str(ext)), held)
    result = tokenizer_figures(name, summary["added"], before, after, held)
    result["tokenised_as_before"] = [summary["heldout"]["tokenised_as_before"],
                                     summary["heldout"]["without_new_tokens"]]
    chars = result["heldout_chars"]

    bpc = {"base": bits_per_char(str(base), held), "extended_init": bits_per_char(str(ext), held)}
    speed = {}
    if args.steps:
        note(f"{name}: adaptation runs ({args.steps} steps each)")
        base_run, base_summary = adapt(base, work, f"{name}-base-lora", args, "none")
        ext_run, ext_summary = adapt(ext, work, f"{name}-ext-lora", args, "new")
        bpc["base_adapted"] = bits_per_char(str(base_run), held)
        bpc["extended_adapted"] = bits_per_char(str(ext_run), held)
        for key, s, tokens in (("base", base_summary, before.tokens), ("extended", ext_summary, after.tokens)):
            tps = s["tokens"] / s["seconds"]
            per_million = tokens / chars * 1e6
            speed[key] = {"train_tokens_per_s": round(tps, 1), "tokens_per_1M_chars": round(per_million),
                          "train_seconds_per_1M_chars": round(per_million / tps, 1),
                          "final_loss": s["final_loss"]}
        result["adaptation"] = {"steps": args.steps, "micro_batch": args.batch, "max_length": args.max_length,
                                "lr": args.lr, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    result["bits_per_char"] = {k: round(v, 4) for k, v in bpc.items()}
    if "extended_adapted" in bpc:
        result["extended_adapted_vs_base"] = round(bpc["extended_adapted"] / bpc["base"] - 1, 4)
    result["speed"] = speed
    return result


def render(r: dict) -> str:
    b = r["bits_per_char"]
    out = [f"{r['model']}: +{r['added']} tokens; held-out {r['heldout_chars']} chars: tokens {r['tokens']['base']} -> "
           f"{r['tokens']['extended']} ({100 * r['token_reduction']:.1f}% fewer), tokens/word "
           f"{r['tokens_per_word']['base']:.2f} -> {r['tokens_per_word']['extended']:.2f}, words in 3+ pieces "
           f"{100 * r['split_3plus']['base']:.0f}% -> {100 * r['split_3plus']['extended']:.0f}%",
           *(["  bits/char: " + ", ".join(f"{k} {v:.3f}" for k, v in b.items())] if b else [])]
    if "extended_adapted_vs_base" in r:
        out.append(f"  extended + adaptation vs base: {100 * r['extended_adapted_vs_base']:+.1f}% bits/char")
    for key, s in r["speed"].items():
        out.append(f"  {key}: {s['train_tokens_per_s']} train tokens/s, {s['tokens_per_1M_chars']} tokens per 1M chars"
                   f" -> {s['train_seconds_per_1M_chars']} s to train on 1M chars")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--add", type=int, default=5000, help="new tokens at most")
    parser.add_argument("--steps", type=int, default=60, help="adaptation steps (0: skip adaptation)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--tokenizer-only", action="store_true", help="tokenisation figures only (no model loaded)")
    parser.add_argument("--demo-texts", type=int, default=3000, help="synthetic demo texts added to the corpus")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tokenizer_extension.json")
    args = parser.parse_args(argv)
    from ayar.paths import models_dir

    work = Path(tempfile.mkdtemp(prefix="ayar-tokext-"))
    try:
        train_txt, held_txt, held = corpora(work, args.demo_texts)
        results = []
        for name in args.models:
            if not (models_dir() / name / "config.json").is_file():
                print(f"{name}: not fetched (run `ayar model fetch {name}`); skipped", file=sys.stderr)
                continue
            results.append(bench_model(name, work, train_txt, held_txt, held, args))
            print(render(results[-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
