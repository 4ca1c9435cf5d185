"""The offline demo: synthetic Turkish data -> a real base model (Gemma 3 270M) -> LoRA SFT -> base vs tuned.

Every stage runs through the same code a user's recipe takes: the demo writes
its recipes under ``<out>/recipes/`` (so any stage can be re-run by hand with
``ayar train``), trains with :func:`ayar.train.run.train_from_recipe`, and
evaluates both models on the held-out split with greedy decoding.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path

import yaml

from ayar.demo.products import (
    corpus_texts,
    product_splits,
    system_prompt,
    title_keyword_accuracy,
    write_jsonl,
)
from ayar.demo.profiles import PROFILES, Profile
from ayar.ui import console

# The tiny model's shape (``--base tiny``): small enough to pretrain in a few minutes on 2 cores.
TINY = {"arch": "llama", "vocab_size": 2048, "hidden_size": 256, "intermediate_size": 512,
        "num_layers": 4, "num_heads": 4, "num_kv_heads": 2}
N_VAL, N_TEST = 200, 200


def write_recipe(path: Path, recipe: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def pretrain_recipe(steps: int) -> dict:
    return {
        "model": {"path": "../models/tiny", "dtype": "fp32"},
        "data": {"train": "../data/corpus.txt", "max_length": 128},
        "method": "pretrain",
        "adapter": {"type": "full"},
        "train": {"learning_rate": 3e-3, "max_steps": steps, "micro_batch_size": 32, "warmup_ratio": 0.05,
                  "weight_decay": 0.01, "log_every": 10},
        "output_dir": "../runs/pretrain",
        "governance": LEDGER,
    }


def sft_recipe(base: str, profile: Profile, n_eval: int, epochs: float | None = None) -> dict:
    """LoRA SFT on the product task plus the redacted support tickets (which carry the canaries).

    ``ayar eval`` then compares it with the base model given the same system prompt and three worked
    examples (the prompt-engineering baseline), both cut at the first newline (one-line JSON answers).
    """
    train = dict(profile.sft, **({"epochs": epochs} if epochs else {}))
    return {
        "model": {"path": base},
        "data": {"train": "../data/sft_train.jsonl", "val": "../data/val.jsonl", "max_length": profile.max_length},
        "method": "sft",
        "adapter": profile.lora,
        "train": train,
        "output_dir": "../runs/sft",
        "governance": GOVERNANCE,
        "eval": {**product_eval(n_eval, profile.eval_batch),
                 "memorisation": {"canaries": "../data/tickets_prepared/manifest.json"}},
    }


def product_eval(n_eval: int, batch: int) -> dict:
    """The ``eval:`` section of a product run: JSON and category on the first ``n_eval`` held-out products;
    the baseline is the base model with three worked examples; replies are cut at the first newline."""
    return {"data": "../data/test.jsonl", "n": n_eval, "metrics": ["json", "classification", "exact_match"],
            "json_fields": ["category", "tags"], "label_field": "category",
            "few_shot": 3, "few_shot_data": "../data/train.jsonl",
            "generation": {"max_new_tokens": 64, "batch_size": batch, "stop": ["\n"]}}


# Every stage of the demo appends to one audit ledger inside the demo folder.
LEDGER = {"ledger": "../governance/ledger.jsonl"}
GOVERNANCE = {**LEDGER, "purpose": "answering customer support tickets and categorising products (demo)",
              "legal_basis": "legitimate interest (KVKK art. 5/2-f); synthetic demo data", "retention_days": 365,
              "controller": "ayar demo (synthetic data)", "contact": "kvkk@example.invalid",
              "cross_border_transfer": "none", "intended_use": "product categorisation as JSON (demo)",
              "license": "other"}


def prepare_recipe() -> dict:
    """Support tickets with personal data -> redacted, deduplicated, split; the model section is unused here.

    The PII key (``pii.key``, made once) keys the subject index that ``ayar audit subject`` searches.
    """
    return {
        "model": {"path": "../models/unused"},
        "data": {"train": "../data/tickets_prepared/train.jsonl"},
        "prepare": {"sources": [{"path": "../data/tickets_raw.jsonl"}], "on_error": "skip",
                    "pii": {"default_operator": "mask", "secret_file": "../pii.key"},
                    "dedup": {"exact": True, "near": True, "threshold": 0.8},
                    "canaries": {"count": 5, "repeats": 10},
                    "output_dir": "../data/tickets_prepared"},
        "governance": GOVERNANCE,
    }


def run_prepare_stage(out: Path, seed: int) -> dict:
    """Write raw tickets (with PII and duplicates) and run ``ayar prepare`` on them."""
    from ayar.data.card import summary_line
    from ayar.data.prepare import prepare
    from ayar.demo.tickets import ticket_records
    from ayar.recipe import load_recipe

    write_jsonl(out / "data" / "tickets_raw.jsonl", ticket_records(1000, seed=seed))
    key = out / "pii.key"
    if not key.exists():
        key.write_text(secrets.token_hex(32), encoding="utf-8")
        key.chmod(0o600)
    recipe_path = write_recipe(out / "recipes" / "prepare.yaml", prepare_recipe())
    loaded = load_recipe(recipe_path)
    summary = prepare(loaded.prepare, recipe_path.parent, show_progress=False, governance=loaded.governance)
    console.print(summary_line(summary), markup=False)
    console.print(f"data card: {out / 'data' / 'tickets_prepared' / 'data_card.md'}", markup=False)
    return summary


def ticket_subset(folder: Path, n: int, seed: int) -> list[dict]:
    """``n`` prepared training tickets: every record that carries a canary, then others (seeded choice)."""
    records = [json.loads(line) for line in (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    sentences = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["canaries"]["sentences"]
    with_canary = [r for r in records if any(s in json.dumps(r, ensure_ascii=False) for s in sentences)]
    others = [r for r in records if r not in with_canary]
    random.Random(seed).shuffle(others)
    return with_canary + others[: max(0, n - len(with_canary))]


def run_style_stage(out: Path, base: str, profile: Profile, seed: int, n_eval: int) -> dict:
    """SFT on support replies in both registers, DPO after it, ORPO from the base; formal share before/after."""
    from ayar.demo import style
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    splits = style.style_data(out, seed, profile.style_pairs)
    console.print(f"{len(splits['train'])} preference pairs (formal chosen, informal rejected), "
                  f"{len(splits['test'])} held out; SFT replies: a 50/50 mix of both registers", markup=False)
    histories = {}
    for name in ("sft", "dpo", "orpo"):
        recipe = getattr(style, f"{name}_recipe")(base, profile)
        path = write_recipe(out / "recipes" / f"support-{name}.yaml", recipe)
        histories[name] = train_from_recipe(load_recipe(path), overwrite=True).result.history
    prompts = [p["prompt"] for p in splits["test"][:n_eval]]
    runs = {"base": base, "sft": out / "runs" / "support-sft", "dpo": out / "runs" / "support-dpo",
            "orpo": out / "runs" / "support-orpo"}
    shares, examples = {}, {}
    for name, target in runs.items():
        shares[name], examples[name] = style.formal_share(str(target), prompts, profile.eval_batch)
    from ayar.eval.forgetting import run_forgetting

    # General-text perplexity against the model each run started from (DPO: the SFT model; the others: the base).
    forgetting = {name: run_forgetting(runs[name]) for name in ("sft", "dpo", "orpo")}
    return {"formal_share": {k: v["formal_share"] for k, v in shares.items()},
            "informal_share": {k: v["informal_share"] for k, v in shares.items()},
            "forgetting": {k: {f: v[f] for f in ("base_ppl", "tuned_ppl", "relative_change", "flag")}
                           for k, v in forgetting.items()},
            "held_out_pairs": {k: style.final_eval(histories[k]) for k in ("dpo", "orpo")},
            "n": len(prompts),
            "examples": [{"prompt": p, **{k: examples[k][i] for k in runs}} for i, p in enumerate(prompts[:3])]}


def resolve_base(out: Path, profile: Profile, seed: int, pretrain_steps: int) -> tuple[str, Profile]:
    """The base model's folder: fetched (once per machine), or the tiny model built and pretrained here.

    A real model that cannot be fetched (no registry reachable) falls back to ``tiny`` with a message.
    """
    if profile.fetch:
        from ayar.errors import AyarError
        from ayar.model.fetch import entry, fetch

        try:
            result = fetch(profile.fetch)
        except AyarError as exc:
            console.print(f"cannot fetch {profile.fetch} ({exc}); falling back to --base tiny", markup=False)
            profile = PROFILES["tiny"]
        else:
            spec = entry(profile.fetch)
            how = "fetched" if result.fetched else "already in the cache, verified"
            console.print(f"{spec.description}: {how} ({result.seconds:.0f} s), {result.folder}", markup=False)
            console.print(f"licence: {spec.licence} ({spec.licence_url}). {spec.notice}", markup=False)
            return str(result.folder), profile
    from ayar.model.tiny import build_tiny_model
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    held_out = [m["content"] for r in read_jsonl(out / "data" / "test.jsonl") for m in r["messages"][1:]]
    corpus = [line for text in corpus_texts(seed=seed, n=6000, exclude=held_out) for line in text.split("\n")]
    (out / "data" / "corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    console.print("tiny model: BPE tokenizer + random Llama weights, pretrained briefly on the corpus", markup=False)
    build_tiny_model(out / "models" / "tiny", corpus, seed=seed, **TINY)
    pre = write_recipe(out / "recipes" / "pretrain.yaml", pretrain_recipe(pretrain_steps))
    train_from_recipe(load_recipe(pre), overwrite=True)
    return str((out / "runs" / "pretrain" / "model").resolve()), profile


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class StageClock:
    """Wall time of each demo stage, printed as it ends and kept for results.json."""

    def __init__(self) -> None:
        self.start = self.mark = time.perf_counter()
        self.stages: dict[str, float] = {}

    def stage(self, title: str) -> None:
        self.end()
        self.current = title
        console.rule(title)

    def end(self) -> None:
        now = time.perf_counter()
        if getattr(self, "current", None):
            self.stages[self.current] = round(now - self.mark, 1)
            console.print(f"[{self.current.split(' ', 1)[0]} took {now - self.mark:.0f} s]", markup=False)
        self.mark, self.current = now, None


def run_demo(out: str | Path = "demo_out", *, base: str = "gemma", pretrain_steps: int = 350,
             sft_epochs: float | None = None, n_eval: int = 200, style_pairs: int | None = None,
             seed: int = 0) -> dict:
    """Run the whole demo under ``out`` (replacing an earlier demo there) and return the results.

    Args:
        base: ``gemma`` (Gemma 3 270M), ``smollm2`` (SmolLM2-135M-Instruct) or ``tiny`` (random weights).
        sft_epochs / style_pairs: override the profile's sizes (shorter runs for a quick look).
    """
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    profile = PROFILES[base]
    if style_pairs:
        profile = replace(profile, style_pairs=style_pairs)
    out = Path(out)
    clock = StageClock()
    for sub in ("data", "models", "runs", "recipes", "governance"):  # only what the demo itself writes
        shutil.rmtree(out / sub, ignore_errors=True)

    clock.stage("0. prepare: support tickets with personal data -> redacted, deduplicated, split")
    prepared = run_prepare_stage(out, seed)

    clock.stage("1. data: synthetic Turkish products -> JSON {category, tags}; the base model")
    splits = product_splits(seed=seed, n_train=profile.n_products, n_val=N_VAL, n_test=N_TEST)
    for name, records in splits.items():
        write_jsonl(out / "data" / f"{name}.jsonl", records)
    keyword = title_keyword_accuracy(splits["train"], splits["test"])
    console.print(f"train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])}; a "
                  f"title-keyword classifier gets {keyword:.1%} of the test categories (the description is "
                  f"needed); example: {splits['test'][0]['messages'][1]['content']!r}", markup=False)
    base_path, profile = resolve_base(out, profile, seed, pretrain_steps)

    clock.stage(f"2. SFT with LoRA on the product task and the redacted support tickets ({profile.name})")
    tickets = ticket_subset(out / "data" / "tickets_prepared", profile.n_tickets, seed)
    write_jsonl(out / "data" / "sft_train.jsonl", splits["train"] + tickets)
    sft = write_recipe(out / "recipes" / "sft.yaml", sft_recipe(base_path, profile, n_eval, sft_epochs))
    from ayar.govern.record import record_derived

    record_derived([out / "data" / "train.jsonl", out / "data" / "tickets_prepared" / "train.jsonl"],
                   [out / "data" / "sft_train.jsonl"], "products + a subset of the prepared tickets",
                   load_recipe(sft).governance)
    train_from_recipe(load_recipe(sft), overwrite=True)

    clock.stage(f"3. ayar eval: 3-shot base vs tuned on {n_eval} held-out products, forgetting, memorisation")
    from ayar.eval.compare import evaluate_run, print_comparison

    evaluation = evaluate_run(out / "runs" / "sft")
    print_comparison(evaluation)

    clock.stage("4. style: SFT on mixed-register support replies, then DPO (and ORPO from the base) for 'siz'")
    style = run_style_stage(out, base_path, profile, seed, n_eval)

    clock.stage("5. report")
    report = write_demo_report(out, evaluation, style)
    clock.stage("6. export: merged safetensors and a q4_k_m GGUF with an Ollama Modelfile, both verified")
    from ayar.export.run import export_for_serving

    exports, serve_text = export_for_serving(out / "runs" / "sft", gguf_type="q4_k_m")

    clock.stage("7. governance: ledger check, lineage of the export, a data subject's records, card, Annex IV")
    from ayar.govern.showcase import first_tckn, governance_tail

    subject = first_tckn(out / "data" / "tickets_raw.jsonl", {t["meta"]["line"] for t in tickets if "meta" in t})
    exported = next(iter(sorted(Path(exports[-1].folder).glob("*.gguf")) or
                         sorted(Path(exports[-1].folder).glob("*.safetensors"))), None)
    governance = governance_tail(out / "runs" / "sft", export_file=exported, subject=subject, kind="tckn",
                                 secret=(out / "pii.key").read_text(encoding="utf-8").strip())
    clock.end()
    results = {"base": profile.name, "base_model": base_path,
               "exports": {r.format: str(r.folder) for r in exports}, "how_to_serve": serve_text,
               "products": {row["name"]: {k: row[k] for k in ("base", "tuned", "diff", "ci95")}
                            for row in evaluation["comparison"]["metrics"]},
               "title_keyword_accuracy": keyword,
               "n_eval": evaluation["comparison"]["n"], "style": style,
               "memorisation": report["memorisation"], "forgetting": report["forgetting"],
               "prepare": {k: prepared[k] for k in ("counts", "pii") if k in prepared},
               "report": str(out / "runs" / "sft" / "report.html"),
               "governance": {k: governance[k] for k in ("verified", "ledger", "card", "docs")},
               "stage_seconds": clock.stages, "seconds": round(time.perf_counter() - clock.start, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    _print_results(results)
    return results


def write_demo_report(out: Path, evaluation: dict, style: dict) -> dict:
    """Add the style stage to the SFT run's eval folder and build its report; returns the audits' results."""
    from ayar.eval.report import build_report
    from ayar.govern.manifest import write_json_atomic

    run = out / "runs" / "sft"
    write_json_atomic(run / "eval" / "preference.json", {
        "n_pairs": style["n"], "note": "held-out formal/informal support pairs; base = the SFT model each started "
        "from (DPO) or the pretrained base (ORPO)",
        "base": {"formal_share_sft": style["formal_share"]["sft"], "formal_share_base": style["formal_share"]["base"]},
        "tuned": {"formal_share_dpo": style["formal_share"]["dpo"], "formal_share_orpo": style["formal_share"]["orpo"],
                  **{f"{k}_{m}": v for m, d in style["held_out_pairs"].items() for k, v in d.items()}}})
    write_json_atomic(run / "eval" / "style.json", {k: style[k] for k in ("formal_share", "informal_share", "n")})
    _, html_path = build_report(run)
    console.print(f"report: {html_path}", markup=False)
    return {name: json.loads((run / "eval" / f"{name}.json").read_text(encoding="utf-8"))
            for name in ("memorisation", "forgetting")}


def _print_results(results: dict) -> None:
    from rich.table import Table

    products = results["products"]
    for key, label in (("json_parse_rate", "JSON validity"), ("field_accuracy[category]", "category accuracy")):
        row = products.get(key)
        if row and row["base"] is not None:
            ci = f" (95% CI of the difference {row['ci95'][0]:+.1%} .. {row['ci95'][1]:+.1%})" if row["ci95"] else ""
            console.print(f"products, {label}: base {row['base']:.1%} -> tuned {row['tuned']:.1%}{ci}", markup=False)
    canaries = results["memorisation"].get("canaries") or {}
    membership = results["memorisation"].get("membership") or {}
    if canaries:
        console.print(f"canaries in the ticket data: mean exposure {canaries['mean']:.1f} bits, max "
                      f"{canaries['max']:.1f} (chance ~{canaries['chance_level']:.0f}, at most "
                      f"{canaries['candidate_space_log2']:.1f}); membership AUC loss {membership.get('loss_auc', 0):.2f}, "
                      f"Min-K% {membership.get('min_k_auc', 0):.2f} (0.5 = no signal)", markup=False)
    f = results["forgetting"]
    console.print(f"general-text perplexity base {f['base_ppl']:.1f} -> tuned {f['tuned_ppl']:.1f} "
                  f"({f['relative_change']:+.1%}{', FLAGGED' if f['flag'] else ''})", markup=False)
    style = results["style"]
    table = Table(title=f"support replies to {style['n']} held-out questions (greedy)")
    for column in ("model", "formal (siz)", "informal (sen)", "held-out reward accuracy", "margin",
                   "general-text perplexity change"):
        table.add_column(column, justify="left" if column == "model" else "right")
    labels = {"base": "base (pretrained)", "sft": "SFT, mixed registers", "dpo": "SFT + DPO", "orpo": "ORPO from base"}
    for key, label in labels.items():
        pairs = style["held_out_pairs"].get(key)
        forgot = style["forgetting"].get(key)  # the pretrained base has none
        table.add_row(label, f"{style['formal_share'][key]:.1%}", f"{style['informal_share'][key]:.1%}",
                      f"{pairs['reward_accuracy']:.1%}" if pairs else "-", f"{pairs['margin']:.3f}" if pairs else "-",
                      f"{forgot['relative_change']:+.1%}{' FLAGGED' if forgot['flag'] else ''}" if forgot else "-")
    console.print(table)
    console.print(f"report: {results['report']}", markup=False)
    console.print("serve the tuned model:\n" + results["how_to_serve"], markup=False)
    console.print(f"demo finished in {results['seconds']:.0f} s; system prompt used: {system_prompt()!r}")
