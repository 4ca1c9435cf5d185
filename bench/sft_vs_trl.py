"""SFT throughput, memory and loss: ayar's ``fit`` against TRL's ``SFTTrainer`` on the same model and data.

Both runs train LoRA r=16 on every linear layer of the same ~110M-parameter Llama (random
weights, tokenizer trained locally), on the same tokenised conversations (from ayar's
``encode_conversation``; the loss is on assistant tokens only, ~40% of the tokens), in the same
micro-batches in the same order, with the same optimizer settings, schedule and precision. Each
framework runs in a fresh subprocess, so its peak RSS is its own.

Usage::

    python bench/sft_vs_trl.py                 # default: 24 steps (2 warm-up), micro-batch 4, 1 thread
    python bench/sft_vs_trl.py --steps 40 --precision fp32 --threads 2 --weights bfloat16

Prints a Markdown table (tokens/s, peak RSS, loss, ayar/TRL ratios) and the command that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LORA,
    REAL_MODELS,
    BenchData,
    build_data,
    describe_model,
    lora_config,
    model_shape,
    peak_rss_mib,
    precision_for_this_cpu,
    resolve_model,
    rss_mib,
)
from flops import matmul_peak, step_flops  # noqa: E402

# ----------------------------------------------------------------------------- child side

def run_ayar(spec: dict, data: BenchData) -> dict:
    import torch
    from accelerate import Accelerator

    from ayar.chat.tokenize import EncodedExample
    from ayar.model.adapters import attach_adapter
    from ayar.model.load import load_model
    from ayar.recipe import AdapterSection, TrainSection
    from ayar.train.loop import fit

    examples = [EncodedExample(i, lab) for i, lab in zip(data.input_ids, data.labels, strict=True)]
    cfg = TrainSection(learning_rate=spec["lr"], max_steps=spec["steps"], micro_batch_size=spec["batch_size"],
                       gradient_accumulation_steps=1, scheduler="cosine", warmup_ratio=spec["warmup_ratio"],
                       weight_decay=0.0, max_grad_norm=1.0, precision=spec["precision"], seed=spec["seed"],
                       log_every=1, save_every=None, tracking="none", gradient_checkpointing=False)
    model = load_model(spec["model"], dtype=getattr(torch, spec["weights"]))
    torch.manual_seed(spec["seed"])  # adapter initialisation, as ayar.train.run does
    model = attach_adapter(model, AdapterSection(type="lora", r=LORA["r"], alpha=LORA["alpha"],
                                                 dropout=LORA["dropout"], target_modules=LORA["target_modules"]))
    accelerator = Accelerator(mixed_precision="no", cpu=True)
    wall, cpu = [], []

    def progress(step, total, record):
        wall.append(time.perf_counter())
        cpu.append(time.process_time())

    rss_before = rss_mib()
    result = fit(model, examples, cfg, pad_id=data.pad_id, accelerator=accelerator, progress=progress)
    losses = [r["loss"] for r in result.history]
    return {"wall": wall, "cpu": cpu, "losses": losses, "rss_before_train_mib": rss_before}


def run_trl(spec: dict, data: BenchData) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    order = [i for batch in data.batches for i in batch]  # ayar's batch order; read sequentially below
    dataset = Dataset.from_dict({
        "input_ids": [data.input_ids[i] for i in order],
        # TRL builds its labels from this mask (-100 where 0), as for assistant_only_loss.
        "assistant_masks": [[int(lab != -100) for lab in data.labels[i]] for i in order],
    })
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=getattr(torch, spec["weights"]),
                                                 use_safetensors=True)
    steps = spec["steps"]
    args = SFTConfig(
        output_dir=spec["workdir"] + "/trl", max_steps=steps, per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1, learning_rate=spec["lr"], lr_scheduler_type="cosine",
        warmup_steps=round(spec["warmup_ratio"] * steps), weight_decay=0.0, max_grad_norm=1.0,
        adam_beta1=0.9, adam_beta2=0.999,  # optimizer: TRL's default (fused AdamW); ayar: torch.optim.AdamW
        bf16=spec["precision"] == "bf16", fp16=False, use_cpu=True, seed=spec["seed"], data_seed=spec["seed"],
        gradient_checkpointing=False,  # TRL's default is True; ayar's is False
        max_length=spec["max_length"], packing=False, padding_free=False, train_sampling_strategy="sequential",
        logging_steps=1, save_strategy="no", report_to="none", eval_strategy="no",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    wall, cpu = [], []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            wall.append(time.perf_counter())
            cpu.append(time.process_time())

    torch.manual_seed(spec["seed"])  # adapter initialisation: SFTTrainer wraps the model before Trainer seeds
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(), callbacks=[Clock()])
    prepared = trainer.train_dataset
    if (prepared["input_ids"] != [data.input_ids[i] for i in order]
            or prepared["labels"] != [data.labels[i] for i in order]):
        raise SystemExit("TRL's prepared ids or labels differ from ayar's: the two runs would not train on the same tokens")
    rss_before = rss_mib()
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"wall": wall, "cpu": cpu, "losses": losses, "rss_before_train_mib": rss_before}


def child(framework: str, spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    data = BenchData.load(Path(spec["data"]))
    load0 = os.getloadavg()[0]
    peak = matmul_peak("cpu")  # this process's thread setting, under the current load
    out = {"ayar": run_ayar, "trl": run_trl}[framework](spec, data)
    out.update(peak_rss_mib=peak_rss_mib(), load_start=load0, load_end=os.getloadavg()[0], matmul_peak=peak)
    Path(spec["workdir"], f"{framework}.json").write_text(json.dumps(out))


# ----------------------------------------------------------------------------- parent side

def summarise(res: dict, data: BenchData, warmup: int, shape) -> dict:
    steps = len(data.batches)
    if len(res["wall"]) != steps:
        raise SystemExit(f"expected {steps} step timings, got {len(res['wall'])}")
    timed = range(warmup, steps)  # step k ends at wall[k]; step warmup+1 starts at wall[warmup-1]
    start = warmup - 1
    seconds = res["wall"][-1] - res["wall"][start]
    cpu = res["cpu"][-1] - res["cpu"][start]
    counts = {k: sum(data.step_tokens(s)[k] for s in timed) for k in ("targets", "real", "padded")}
    last = res["losses"][-5:]
    flops = sum(step_flops(shape, [len(data.input_ids[i]) for i in data.batches[s]], data.step_tokens(s)["targets"],
                           lora_r=LORA["r"]) for s in timed)
    return {
        "mfu": flops / seconds / res["matmul_peak"], "matmul_gflops": res["matmul_peak"] / 1e9,
        "model_gflops": flops / seconds / 1e9,
        "target_tps": counts["targets"] / seconds, "real_tps": counts["real"] / seconds,
        "padded_tps": counts["padded"] / seconds, "s_per_step": seconds / len(timed),
        "cpu_s_per_step": cpu / len(timed), "peak_rss": res["peak_rss_mib"],
        "rss_before": res["rss_before_train_mib"], "first_loss": res["losses"][0],
        "final_loss": res["losses"][-1], "last5_loss": sum(last) / len(last),
        "load": (res["load_start"], res["load_end"]), "counts": counts,
    }


def table(a: dict, t: dict) -> str:
    rows = [
        ("target tokens/s (assistant tokens)", "target_tps", "{:.1f}", True),
        ("tokens/s (all non-padding tokens)", "real_tps", "{:.1f}", True),
        ("tokens/s (incl. padding)", "padded_tps", "{:.1f}", True),
        ("s per step (wall)", "s_per_step", "{:.2f}", False),
        ("CPU s per step (process time)", "cpu_s_per_step", "{:.2f}", False),
        ("model GFLOP/s (useful FLOPs, bench/flops.py)", "model_gflops", "{:.1f}", True),
        ("bf16 matmul GFLOP/s measured in the run", "matmul_gflops", "{:.1f}", True),
        ("MFU (model FLOP/s over that peak)", "mfu", "{:.1%}", True),
        ("peak RSS (MiB)", "peak_rss", "{:.0f}", False),
        ("RSS before first step (MiB)", "rss_before", "{:.0f}", False),
        ("loss at step 1", "first_loss", "{:.4f}", False),
        ("final loss (last step)", "final_loss", "{:.4f}", False),
        ("mean loss, last 5 steps", "last5_loss", "{:.4f}", False),
    ]
    lines = ["| metric | ayar | TRL SFTTrainer | ayar / TRL |", "|---|---:|---:|---:|"]
    for label, key, fmt, _ in rows:
        lines.append(f"| {label} | {fmt.format(a[key])} | {fmt.format(t[key])} | {a[key] / t[key]:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per framework (default 24)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing (default 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="micro-batch size (default 4)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--warmup-ratio", type=float, default=0.03, help="learning-rate warm-up share")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="bf16 autocast (fp32 weights) where the CPU has AMX/AVX512-BF16, else fp32")
    parser.add_argument("--weights", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the frozen base weights, for both frameworks (default float32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch/OpenMP threads per run (default 1: on a shared 2-core machine a second "
                             "OpenMP thread waits on the scheduler at every parallel op)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--order", choices=["ayar-first", "trl-first"], default="ayar-first")
    parser.add_argument("--model", default="llama110m",
                        help=f"llama110m (random, built locally; default), {' or '.join(REAL_MODELS)} (fetched with "
                        "`ayar model fetch`), or a model folder")
    parser.add_argument("--cache-dir", default=None, help="where the model folder is built (default: $TMPDIR)")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument("--child", choices=["ayar", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child, opts.spec)
        return
    if opts.steps <= opts.warmup + 1:
        parser.error("--steps must exceed --warmup by at least 2")

    began = time.perf_counter()
    precision = precision_for_this_cpu(opts.precision)
    path = resolve_model(opts.model, opts.cache_dir)
    data = build_data(path, steps=opts.steps, batch_size=opts.batch_size, max_length=opts.max_length,
                      seed=opts.seed)
    workdir = tempfile.mkdtemp(prefix="sft-vs-trl-")
    data.save(Path(workdir, "data.json"))
    spec = {"model": str(path), "data": str(Path(workdir, "data.json")), "workdir": workdir,
            "steps": opts.steps, "batch_size": opts.batch_size, "max_length": opts.max_length, "lr": opts.lr,
            "warmup_ratio": opts.warmup_ratio, "precision": precision, "seed": opts.seed,
            "weights": opts.weights, "threads": opts.threads}
    Path(workdir, "spec.json").write_text(json.dumps(spec))
    order = ["ayar", "trl"] if opts.order == "ayar-first" else ["trl", "ayar"]
    results = {}
    for framework in order:
        t0 = time.perf_counter()
        threads = str(opts.threads)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        subprocess.run([sys.executable, __file__, "--child", framework, "--spec", str(Path(workdir, "spec.json"))],
                       check=True, env=env, stdout=sys.stderr)  # keep stdout for the table
        results[framework] = summarise(json.loads(Path(workdir, f"{framework}.json").read_text()), data,
                                       opts.warmup, model_shape(path))
        print(f"{framework}: {time.perf_counter() - t0:.0f} s in its subprocess", file=sys.stderr)
    shutil.rmtree(workdir, ignore_errors=True)
    a, t = results["ayar"], results["trl"]
    if opts.json:
        Path(opts.json).write_text(json.dumps({"spec": spec, "results": results}, indent=1))

    import torch
    import transformers
    import trl

    real = [len(x) for x in data.input_ids]
    counts = a["counts"]
    print("\n" + table(a, t) + "\n")
    print(f"Model: {describe_model(path)}, "
          f"weights in {'fp32' if opts.weights == 'float32' else 'bf16'}; LoRA r={LORA['r']} alpha={LORA['alpha']:g} dropout {LORA['dropout']} on all "
          f"linear layers; {precision} {'autocast' if precision == 'bf16' else ''}; micro-batch {opts.batch_size}, "
          f"max length {opts.max_length}, lr {opts.lr:g} cosine, {opts.steps} steps ({opts.warmup} warm-up steps "
          f"untimed), identical batches in identical order, right padding to the longest in the batch, no packing.")
    print(f"Data: {len(real)} synthetic conversations, {min(real)}-{max(real)} tokens (mean "
          f"{sum(real) / len(real):.0f}); timed steps: {counts['targets']} target / {counts['real']} real / "
          f"{counts['padded']} padded tokens (targets {counts['targets'] / counts['real']:.0%} of real tokens, "
          f"padding {1 - counts['real'] / counts['padded']:.0%}).")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({opts.threads} thread{'s' if opts.threads > 1 else ''} per run), transformers {transformers.__version__}, "
          f"trl {trl.__version__}; load average 1 min at start/end: ayar {a['load'][0]:.2f}/{a['load'][1]:.2f}, "
          f"TRL {t['load'][0]:.2f}/{t['load'][1]:.2f}.")
    speed, memory = a["real_tps"] / t["real_tps"], a["peak_rss"] / t["peak_rss"]
    print(f"Target (issue 18, Gemma 3 270M LoRA SFT: >= 1.5x TRL's tokens/s at <= 0.6x its peak RSS): "
          f"{speed:.2f}x at {memory:.2f}x, {'met' if speed >= 1.5 and memory <= 0.6 else 'not met'}.")
    print(f"Command: python bench/sft_vs_trl.py {shlex.join(sys.argv[1:])}".rstrip())
    print(f"Total time: {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
