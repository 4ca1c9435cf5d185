"""DPO throughput, memory, loss and held-out reward accuracy: ayar against TRL's ``DPOTrainer``.

Every run trains LoRA r=16 on every linear layer of the ~110M-parameter Llama of
``sft_vs_trl.py`` (random weights, tokenizer trained locally) with the sigmoid DPO loss, on
the same preference pairs in the same micro-batches in the same order, with the same
optimizer settings, schedule, beta and precision. The runs are:

- ``ayar precompute``: ``preference.reference: precompute`` (one no-grad pass over the
  train and held-out pairs before training; training runs no reference forward);
- ``ayar on the fly``: ``preference.reference: adapter_disabled`` (a reference forward with
  the adapter switched off in every step);
- ``TRL``: ``DPOTrainer`` with ``precompute_ref_log_probs=False`` (its default; with PEFT its
  reference is also the model with the adapter disabled);
- ``TRL precompute``: ``precompute_ref_log_probs=True`` (leave out with ``--no-trl-precompute``).

ayar is driven through its public path: a recipe file and ``ayar.train.run.train_from_recipe``.
Two of that module's names are wrapped, for measurement only: ``step_progress`` (the progress
display, to time each step) and ``precompute_reference`` (to time the precompute pass). Each run
is a fresh subprocess, so its peak RSS is its own.

Usage::

    python bench/dpo_vs_trl.py                  # default: 16 steps (2 warm-up), 4 pairs per micro-batch, 1 thread
    python bench/dpo_vs_trl.py --steps 3 --warmup 1 --eval-pairs 8 --model /tmp/small-model   # a quick check

Prints a Markdown table and the ayar/TRL ratios, and writes the raw numbers as JSON
(``--json``, default ``bench/results/dpo_vs_trl.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LEXICON_SEED,
    LORA,
    REAL_MODELS,
    TextSource,
    describe_model,
    lora_config,
    model_shape,
    peak_rss_mib,
    precision_for_this_cpu,
    resolve_model,
    rss_mib,
)
from flops import matmul_peak, step_flops  # noqa: E402

RUNS = {  # run name -> (framework, reference mode)
    "ayar precompute": ("ayar", "precompute"),
    "ayar on the fly": ("ayar", "adapter_disabled"),
    "TRL": ("trl", "on_the_fly"),
    "TRL precompute": ("trl", "precompute"),
}
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "dpo_vs_trl.json"


# ----------------------------------------------------------------------------- data (parent side)

def preference_records(n_train: int, n_eval: int, seed: int, context_words: tuple[int, int]) -> dict[str, list]:
    """Turkish support pairs (chosen: formal reply, rejected: informal) behind a synthetic system context.

    The pairs come from :func:`ayar.demo.support.support_splits` (no prompt repeats within or
    across the splits). Each prompt gets a system message of ``context_words`` (a range) words of
    generated text, standing in for the policy text a support assistant is given; with the default
    range a row (prompt and one reply) is about 280 tokens long, where the bare pairs give about 110.
    """
    from ayar.demo.support import support_splits

    source = TextSource(LEXICON_SEED)
    rng = random.Random(seed + 1)
    out = {}
    for split, pairs in support_splits(n_train, n_eval, seed).items():
        out[split] = [{"prompt": [{"role": "system", "content": source.text(rng, rng.randint(*context_words))},
                                  {"role": "user", "content": p["prompt"]}],
                       "chosen": [{"role": "assistant", "content": p["chosen"]}],
                       "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def encoded_pairs(model_path: Path, path: Path, max_length: int) -> list[dict]:
    """ayar's token ids of each pair, cut after the last target token (what both frameworks train on).

    ayar's completion rows end with the template's newline after ``<|im_end|>``, an input token
    with no target; TRL's rows (given each reply plus ``<|im_end|>``) stop before it. A token
    after the last target changes no loss or gradient (causal attention), so the counts use the
    shorter rows, and TRL's prepared ids are checked against these.
    """
    from ayar.chat.tokenize import IGNORE_INDEX
    from ayar.model.load import load_tokenizer
    from ayar.train.preference_data import read_pairs

    pairs, stats = read_pairs(str(path), load_tokenizer(str(model_path)), max_length)
    if stats.truncated or stats.dropped or stats.examples != stats.records:
        raise SystemExit(f"{path}: pairs were cut or dropped ({stats}); raise --max-length")
    out = []
    for p in pairs:
        row = {"prompt": p.prompt}
        sides = (("chosen", p.chosen, p.chosen_labels), ("rejected", p.rejected, p.rejected_labels))
        for side, ids, labels in sides:
            end = max(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX) + 1
            if any(lab == IGNORE_INDEX for lab in labels[:end]):
                raise SystemExit(f"{path}: a completion has a non-target token before its end of turn")
            row[side] = ids[:end]
        out.append(row)
    return out


def plan_batches(n: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """ayar's micro-batches (pair indices) in the order its loop reads them; TRL reads this order sequentially."""
    from ayar.train.batching import micro_batches

    stream = micro_batches(n, batch_size, seed)
    return [next(stream) for _ in range(steps)]


def step_tokens(pairs: list[dict], batch: list[int]) -> dict[str, int]:
    """Token counts of one step: the chosen and rejected rows (real and padded) and their targets."""
    rows = [len(pairs[i]["prompt"]) + len(pairs[i][side]) for i in batch for side in ("chosen", "rejected")]
    targets = sum(len(pairs[i]["chosen"]) + len(pairs[i]["rejected"]) for i in batch)
    return {"real": sum(rows), "padded": max(rows) * len(rows), "targets": targets}


# ----------------------------------------------------------------------------- child side

def ayar_recipe(spec: dict, reference: str) -> dict:
    """The recipe of an ayar run: the same settings as the TRL run, field for field."""
    out = Path(spec["workdir"], f"ayar-{reference}")
    return {
        "model": {"path": spec["model"], "dtype": {"float32": "fp32", "bfloat16": "bf16"}[spec["weights"]]},
        "data": {"train": spec["train"], "val": spec["val"], "max_length": spec["max_length"]},
        "method": "dpo",
        "adapter": {"type": "lora", **LORA},
        "preference": {"reference": reference, "cache_dir": str(Path(spec["workdir"], "reference-cache"))},
        "dpo": {"loss": "sigmoid", "beta": spec["beta"]},
        "train": {"learning_rate": spec["lr"], "max_steps": spec["steps"], "micro_batch_size": spec["batch_size"],
                  "gradient_accumulation_steps": 1, "scheduler": "cosine", "warmup_ratio": spec["warmup_ratio"],
                  "weight_decay": 0.0, "max_grad_norm": 1.0, "precision": spec["precision"], "seed": spec["seed"],
                  "log_every": 1, "save_every": None, "tracking": "none", "gradient_checkpointing": False},
        "output_dir": str(out),
    }


def run_ayar(spec: dict, reference: str) -> dict:
    """One ayar DPO run through ``train_from_recipe``: step clocks, losses and reward accuracies."""
    import yaml

    import ayar.train.run as run_module
    from ayar.recipe import load_recipe

    wall, cpu, marks = [], [], {"precompute_s": None, "precompute_cpu_s": None}
    show_progress, precompute = run_module.step_progress, run_module.precompute_reference

    @contextmanager
    def clocked_progress(name):  # entered right before fit: after model load, adapter and precompute
        marks["rss_before_train_mib"] = rss_mib()
        with show_progress(name) as update:
            def tick(step, total, record):
                wall.append(time.perf_counter())
                cpu.append(time.process_time())
                update(step, total, record)
            yield tick

    def timed_precompute(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = precompute(*args, **kwargs)
        marks["precompute_s"], marks["precompute_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        if result[1]:
            raise SystemExit("the reference log-probs came from the cache: the precompute pass was not measured")
        return result

    run_module.step_progress, run_module.precompute_reference = clocked_progress, timed_precompute
    recipe_path = Path(spec["workdir"], f"ayar-{reference}.yaml")
    recipe_path.write_text(yaml.safe_dump(ayar_recipe(spec, reference), sort_keys=False), encoding="utf-8")
    run = run_module.train_from_recipe(load_recipe(recipe_path), overwrite=True)
    metrics = (run.output_dir / "metrics.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in metrics.splitlines()]
    final = rows[-1]
    return {"wall": wall, "cpu": cpu, "losses": [r["loss"] for r in rows],
            "train_accuracy": [r["rewards/accuracy"] for r in rows],
            "eval_accuracy": final["eval_rewards/accuracy"], "eval_loss": final["eval_loss"],
            "eval_margin": final["eval_rewards/margins"], **marks}


def run_trl(spec: dict, reference: str) -> dict:
    """One ``DPOTrainer`` run on ayar's tokens in ayar's batch order: step clocks, losses and reward accuracies."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    eot = tokenizer.eos_token  # ChatML's <|im_end|>

    def standard_form(record: dict) -> dict:
        # TRL's standard (non-conversational) form: the prompt rendered by the same chat template,
        # each reply up to its end-of-turn token. (The conversational form would also make the
        # template's newline after <|im_end|> a target, which ayar does not train on.)
        prompt = tokenizer.apply_chat_template(record["prompt"], tokenize=False, add_generation_prompt=True)
        return {"prompt": prompt, "chosen": record["chosen"][0]["content"] + eot,
                "rejected": record["rejected"][0]["content"] + eot}

    def read(path):
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]

    train, val = read(spec["train"]), read(spec["val"])
    train_rows = [standard_form(train[i]) for i in spec["order"]]  # ayar's batch order, read sequentially
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=getattr(torch, spec["weights"]),
                                                 use_safetensors=True)
    steps, precompute = spec["steps"], reference == "precompute"
    args = DPOConfig(
        output_dir=spec["workdir"] + f"/trl-{reference}", max_steps=steps,
        per_device_train_batch_size=spec["batch_size"], per_device_eval_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=spec["lr"], lr_scheduler_type="cosine",
        warmup_steps=round(spec["warmup_ratio"] * steps), weight_decay=0.0, max_grad_norm=1.0,
        adam_beta1=0.9, adam_beta2=0.999,  # optimizer: TRL's default (fused AdamW); ayar: torch.optim.AdamW
        bf16=spec["precision"] == "bf16", fp16=False, use_cpu=True, seed=spec["seed"], data_seed=spec["seed"],
        gradient_checkpointing=False, max_length=spec["max_length"], beta=spec["beta"], loss_type=["sigmoid"],
        precompute_ref_log_probs=precompute, train_sampling_strategy="sequential", logging_steps=1,
        save_strategy="no", report_to="none", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
    )
    wall, cpu, marks = [], [], {"precompute_s": None, "precompute_cpu_s": None}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            wall.append(time.perf_counter())
            cpu.append(time.process_time())

    class TimedDPOTrainer(DPOTrainer):  # times the precompute pass (train and eval sets), nothing else changes
        def _precompute_ref_logps(self, dataset, name, batch_size):
            t0, c0 = time.perf_counter(), time.process_time()
            result = super()._precompute_ref_logps(dataset, name, batch_size)
            marks["precompute_s"] = (marks["precompute_s"] or 0.0) + time.perf_counter() - t0
            marks["precompute_cpu_s"] = (marks["precompute_cpu_s"] or 0.0) + time.process_time() - c0
            return result

    trainer = TimedDPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                              eval_dataset=Dataset.from_list([standard_form(r) for r in val]),
                              processing_class=tokenizer, peft_config=lora_config(), callbacks=[Clock()])
    for prepared, expected in ((trainer.train_dataset, [spec["pairs"]["train"][i] for i in spec["order"]]),
                               (trainer.eval_dataset, spec["pairs"]["val"])):
        for key in ("prompt", "chosen", "rejected"):
            if prepared[f"{key}_ids"] != [p[key] for p in expected]:
                raise SystemExit(f"TRL's prepared {key}_ids differ from ayar's: the runs would not train on the "
                                 "same tokens")
    marks["rss_before_train_mib"] = rss_mib()
    trainer.train()
    evaluation = trainer.evaluate()
    logged = [r for r in trainer.state.log_history if "loss" in r and "eval_loss" not in r]
    return {"wall": wall, "cpu": cpu, "losses": [r["loss"] for r in logged],
            "train_accuracy": [r["rewards/accuracies"] for r in logged],
            "eval_accuracy": evaluation["eval_rewards/accuracies"], "eval_loss": evaluation["eval_loss"],
            "eval_margin": evaluation["eval_rewards/margins"], **marks}


def child(run: str, spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    framework, reference = RUNS[run]
    load0 = os.getloadavg()[0]
    peak = matmul_peak("cpu")  # this process's thread setting, under the current load
    out = {"ayar": run_ayar, "trl": run_trl}[framework](spec, reference)
    out.update(peak_rss_mib=peak_rss_mib(), load_start=load0, load_end=os.getloadavg()[0], matmul_peak=peak)
    Path(spec["workdir"], f"{framework}-{reference}.json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- parent side

def summarise(res: dict, pairs: list[dict], batches: list[list[int]], warmup: int, shape=None,
              on_the_fly: bool = False) -> dict:
    """Throughput over steps warmup+1 .. N-1 (1-based), memory, losses and reward accuracies of one run.

    The last step is left out of the timing because ayar evaluates the held-out pairs before its
    progress callback for that step; TRL's ``evaluate`` runs after ``train``.
    """
    steps = len(batches)
    if len(res["wall"]) != steps or len(res["losses"]) != steps:
        raise SystemExit(f"expected {steps} step timings and losses, got {len(res['wall'])} and "
                         f"{len(res['losses'])}")
    timed = range(warmup, steps - 1)  # 0-based steps; step k ends at wall[k]
    seconds = res["wall"][steps - 2] - res["wall"][warmup - 1]
    cpu = res["cpu"][steps - 2] - res["cpu"][warmup - 1]
    counts = {k: sum(step_tokens(pairs, batches[s])[k] for s in timed) for k in ("real", "padded", "targets")}
    all_real = sum(step_tokens(pairs, b)["real"] for b in batches)
    s_per_step = seconds / len(timed)
    end_to_end = (res["precompute_s"] or 0.0) + s_per_step * steps  # training at the timed rate, plus the pass
    last = res["losses"][-5:]
    flops = sum(step_flops(shape, [len(pairs[i]["prompt"]) + len(pairs[i][side]) for i in batches[s]
                                   for side in ("chosen", "rejected")],
                           step_tokens(pairs, batches[s])["targets"], lora_r=LORA["r"], reference_forward=on_the_fly)
                for s in timed) if shape else float("nan")
    return {
        "mfu": flops / seconds / res["matmul_peak"], "matmul_gflops": res["matmul_peak"] / 1e9,
        "model_gflops": flops / seconds / 1e9,
        "real_tps": counts["real"] / seconds, "padded_tps": counts["padded"] / seconds,
        "target_tps": counts["targets"] / seconds, "s_per_step": s_per_step, "cpu_s_per_step": cpu / len(timed),
        "precompute_s": res["precompute_s"], "end_to_end_s": end_to_end, "end_to_end_tps": all_real / end_to_end,
        "peak_rss": res["peak_rss_mib"], "rss_before": res["rss_before_train_mib"],
        "first_loss": res["losses"][0], "final_loss": res["losses"][-1], "last5_loss": sum(last) / len(last),
        "losses": res["losses"], "train_accuracy_last": res["train_accuracy"][-1],
        "eval_accuracy": res["eval_accuracy"], "eval_loss": res["eval_loss"], "eval_margin": res["eval_margin"],
        "load": (res["load_start"], res["load_end"]), "counts": counts, "timed_steps": len(timed),
    }


ROWS = [  # label, key, format
    ("tokens/s (chosen + rejected rows, no padding)", "real_tps", "{:.1f}"),
    ("tokens/s (incl. padding)", "padded_tps", "{:.1f}"),
    ("target tokens/s (completion tokens)", "target_tps", "{:.1f}"),
    ("s per step (wall)", "s_per_step", "{:.2f}"),
    ("CPU s per step (process time)", "cpu_s_per_step", "{:.2f}"),
    ("reference precompute pass (s, train + held-out pairs)", "precompute_s", "{:.1f}"),
    ("end to end: precompute + all steps (s)", "end_to_end_s", "{:.0f}"),
    ("end-to-end tokens/s (incl. precompute)", "end_to_end_tps", "{:.1f}"),
    ("model GFLOP/s (useful FLOPs, bench/flops.py)", "model_gflops", "{:.1f}"),
    ("bf16 matmul GFLOP/s measured in the run", "matmul_gflops", "{:.1f}"),
    ("MFU (model FLOP/s over that peak)", "mfu", "{:.1%}"),
    ("peak RSS (MiB)", "peak_rss", "{:.0f}"),
    ("RSS before first step (MiB)", "rss_before", "{:.0f}"),
    ("loss at step 1", "first_loss", "{:.4f}"),
    ("final loss (last step)", "final_loss", "{:.4f}"),
    ("mean loss, last 5 steps", "last5_loss", "{:.4f}"),
    ("reward accuracy, last training step", "train_accuracy_last", "{:.3f}"),
    ("held-out reward accuracy", "eval_accuracy", "{:.3f}"),
    ("held-out reward margin", "eval_margin", "{:.4f}"),
    ("held-out loss", "eval_loss", "{:.4f}"),
]


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, key, fmt in ROWS:
        cells = ["–" if results[n][key] is None else fmt.format(results[n][key]) for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    pairs = [("ayar precompute", "TRL"), ("ayar on the fly", "TRL"), ("ayar precompute", "TRL precompute")]
    out = {}
    for a, t in pairs:
        if a in results and t in results:
            ra, rt = results[a], results[t]
            out[f"{a} / {t}"] = {"throughput": ra["real_tps"] / rt["real_tps"],
                                 "cpu_throughput": rt["cpu_s_per_step"] / ra["cpu_s_per_step"],
                                 "end_to_end": ra["end_to_end_tps"] / rt["end_to_end_tps"],
                                 "peak_rss": ra["peak_rss"] / rt["peak_rss"]}
    return out


def ratio_table(rat: dict[str, dict[str, float]]) -> str:
    lines = ["| ratio | tokens/s | tokens per CPU s | end-to-end tokens/s | peak RSS |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rat.items():
        lines.append(f"| {name} | {r['throughput']:.2f} | {r['cpu_throughput']:.2f} | {r['end_to_end']:.2f} | "
                     f"{r['peak_rss']:.2f} |")
    return "\n".join(lines)


def prepare(opts, workdir: Path) -> dict:
    """Write the pair files, encode them with ayar and plan the batches; returns the runs' spec."""
    path = resolve_model(opts.model, opts.cache_dir)
    n_train = opts.steps * opts.batch_size  # one epoch: every pair is trained on once
    records = preference_records(n_train, opts.eval_pairs, opts.seed, tuple(opts.context_words))
    write_jsonl(workdir / "train.jsonl", records["train"])
    write_jsonl(workdir / "val.jsonl", records["test"])
    pairs = {"train": encoded_pairs(path, workdir / "train.jsonl", opts.max_length),
             "val": encoded_pairs(path, workdir / "val.jsonl", opts.max_length)}
    batches = plan_batches(n_train, opts.steps, opts.batch_size, opts.seed)
    return {"model": str(path), "workdir": str(workdir), "train": str(workdir / "train.jsonl"),
            "val": str(workdir / "val.jsonl"), "steps": opts.steps, "batch_size": opts.batch_size,
            "max_length": opts.max_length, "lr": opts.lr, "beta": opts.beta, "warmup_ratio": opts.warmup_ratio,
            "precision": precision_for_this_cpu(opts.precision), "weights": opts.weights, "seed": opts.seed,
            "threads": opts.threads, "batches": batches, "order": [i for b in batches for i in b], "pairs": pairs}


def run_all(names: list[str], spec: dict, warmup: int) -> dict[str, dict]:
    """Each run in its own subprocess, one after the other; their summaries by run name."""
    workdir = Path(spec["workdir"])
    (workdir / "spec.json").write_text(json.dumps(spec))
    threads = str(spec["threads"])
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    results = {}
    for name in names:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", name, "--spec", str(workdir / "spec.json")],
                       check=True, env=env, stdout=sys.stderr)  # keep stdout for the tables
        framework, reference = RUNS[name]
        raw = json.loads((workdir / f"{framework}-{reference}.json").read_text())
        results[name] = summarise(raw, spec["pairs"]["train"], spec["batches"], warmup, model_shape(spec["model"]),
                                  on_the_fly=reference in ("adapter_disabled", "on_the_fly"))
        print(f"{name}: {time.perf_counter() - t0:.0f} s in its subprocess", file=sys.stderr)
    return results


def describe(opts, spec: dict, results: dict[str, dict], met: bool) -> list[str]:
    """The settings, data, machine and verdict lines printed under the tables."""
    import torch
    import transformers
    import trl

    model = describe_model(Path(spec["model"]))
    rows = [len(p["prompt"]) + len(p[s]) for p in spec["pairs"]["train"] for s in ("chosen", "rejected")]
    counts = results["ayar precompute"]["counts"]
    precision = spec["precision"] + (" autocast" if spec["precision"] == "bf16" else "")
    loads = ", ".join(f"{n} {r['load'][0]:.2f}/{r['load'][1]:.2f}" for n, r in results.items())
    return [
        f"Model: {model}, weights in {'fp32' if opts.weights == 'float32' else 'bf16'}; LoRA r={LORA['r']} "
        f"alpha {LORA['alpha']:g} dropout {LORA['dropout']} on all linear layers; {precision} in every run; "
        f"sigmoid DPO, beta {opts.beta:g}; {opts.batch_size} pairs ({2 * opts.batch_size} rows) per micro-batch, "
        f"lr {opts.lr:g} cosine, warm-up ratio {opts.warmup_ratio:g}, {opts.steps} steps; timed steps "
        f"{opts.warmup + 1}-{opts.steps - 1}; identical batches in identical order, right padding to the longest "
        "row in the batch.",
        f"Data: {len(spec['pairs']['train'])} training pairs (one epoch) and {opts.eval_pairs} held-out pairs of "
        f"ayar.demo.support (chosen formal, rejected informal) behind a synthetic system context; rows "
        f"{min(rows)}-{max(rows)} tokens (mean {sum(rows) / len(rows):.0f}); timed steps: {counts['real']} real / "
        f"{counts['padded']} padded / {counts['targets']} target tokens.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({opts.threads} thread{'s' if opts.threads > 1 else ''} per run), transformers "
        f"{transformers.__version__}, trl {trl.__version__}; load average (1 min) at start/end: {loads}.",
        "Target (issue 18: ayar precompute >= 2.5x TRL's tokens/s at <= TRL's peak RSS): "
        f"{'met' if met else 'not met'}.",
        f"Command: python bench/dpo_vs_trl.py {shlex.join(sys.argv[1:])}".rstrip(),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run (default 16)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (default 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per micro-batch (default 4: 8 rows)")
    parser.add_argument("--eval-pairs", type=int, default=16, help="held-out pairs (default 16)")
    parser.add_argument("--context-words", type=int, nargs=2, default=(95, 135), metavar=("MIN", "MAX"),
                        help="words of the synthetic system context per prompt (default 95 135: rows of "
                        "about 200-340 tokens)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--warmup-ratio", type=float, default=0.0,
                        help="learning-rate warm-up share (default 0: in a short run, 3%% is one step at lr 0)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="bf16 autocast where the CPU has AMX/AVX512-BF16, else fp32; the same for every run")
    parser.add_argument("--weights", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the frozen base weights, for every run (default float32)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per run (default 1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-trl-precompute", action="store_true", help="skip the TRL precompute run")
    parser.add_argument("--model", default="llama110m",
                        help=f"llama110m (random, built locally; default), {' or '.join(REAL_MODELS)} (fetched with "
                        "`ayar model fetch`), or a model folder")
    parser.add_argument("--cache-dir", default=None, help="where the model folder is built (default: $TMPDIR)")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="where the raw results go")
    parser.add_argument("--child", choices=list(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.spec)
        return
    if opts.warmup < 1 or opts.steps < opts.warmup + 2:
        parser.error("--warmup must be at least 1 and --steps at least --warmup + 2 (the last step is not timed)")

    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="dpo-vs-trl-"))
    try:
        spec = prepare(opts, workdir)
        names = [n for n in RUNS if not (opts.no_trl_precompute and n == "TRL precompute")]
        results = run_all(names, spec, opts.warmup)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rat = ratios(results)
    a, t = results["ayar precompute"], results["TRL"]
    met = rat["ayar precompute / TRL"]["throughput"] >= 2.5 and a["peak_rss"] <= t["peak_rss"]
    notes = describe(opts, spec, results, met)
    print("\n" + table(results) + "\n\n" + ratio_table(rat) + "\n")
    print("\n".join(notes))
    print(f"Total time: {time.perf_counter() - began:.0f} s")
    if opts.json:
        Path(opts.json).parent.mkdir(parents=True, exist_ok=True)
        kept = {k: v for k, v in spec.items() if k not in ("pairs", "order", "batches", "workdir", "train", "val")}
        Path(opts.json).write_text(json.dumps({"spec": kept, "results": results, "ratios": rat, "target_met": met,
                                               "notes": notes}, indent=1))


if __name__ == "__main__":
    main()
