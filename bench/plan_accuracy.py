"""How close is `ayar plan` to what a run really uses? Peak memory and time, predicted vs measured.

Trains short runs (a few steps each, every one in a fresh process so peak memory is its own) on this
machine, then predicts each run with calibration constants fitted on the *other* runs (leave one out, so
no run is predicted by constants that saw it), and the `evaluate` set with constants from the `calibrate`
set. Time is compute time (CPU seconds of a single-threaded run, median step x steps): wall time on the
shared 2-core machine this was written on swings tenfold with other people's jobs.
Targets (issue 17): predicted peak memory within ±15% of measured, predicted time within ±25%.

    python bench/plan_accuracy.py            # train every configuration, then calibrate and compare
    python bench/plan_accuracy.py --reuse    # keep finished runs, redo only the analysis

Models: a random 4-layer Llama built here ("tiny"), and SmolLM2-135M / Gemma 3 270M when
`ayar model fetch` has put them under ayar.paths.models_dir() (configurations for a missing model are
skipped and listed). Results: bench/results/plan_accuracy.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(HERE)]

from common import TextSource, conversations, tokenizer_corpus  # noqa: E402

from ayar.paths import models_dir  # noqa: E402

STEPS = 4
PARALLEL = 2  # runs at a time: each is timed by its own CPU time, so they do not distort each other
# name, model, method, adapter, quantization, micro-batch, max_length, set (calibrate / evaluate)
CONFIGS = [
    ("tiny-lora-sft-b2-l128", "tiny", "sft", "lora", "none", 2, 128, "calibrate"),
    ("smol-lora-sft-b2-l256", "smollm2-135m", "sft", "lora", "none", 2, 256, "calibrate"),
    ("smol-full-sft-b4-l256", "smollm2-135m", "sft", "full", "none", 4, 256, "calibrate"),
    ("smol-lora-dpo-b1-l256", "smollm2-135m", "dpo", "lora", "none", 1, 256, "calibrate"),
    ("gemma-lora-sft-b1-l128", "gemma-3-270m", "sft", "lora", "none", 1, 128, "calibrate"),
    ("tiny-dora-sft-b4-l256", "tiny", "sft", "dora", "none", 4, 256, "evaluate"),
    ("tiny-qlora-sft-b2-l128", "tiny", "sft", "lora", "nf4", 2, 128, "evaluate"),
    ("tiny-lora-dpo-b2-l128", "tiny", "dpo", "lora", "none", 2, 128, "evaluate"),
    ("smol-lora-sft-b4-l512", "smollm2-135m", "sft", "lora", "none", 4, 512, "evaluate"),
    ("smol-dora-sft-b2-l256", "smollm2-135m", "sft", "dora", "none", 2, 256, "evaluate"),
    ("smol-qlora-sft-b2-l256", "smollm2-135m", "sft", "lora", "nf4", 2, 256, "evaluate"),
    ("smol-full-sft-b2-l128", "smollm2-135m", "sft", "full", "none", 2, 128, "evaluate"),
    ("smol-lora-dpo-b2-l128", "smollm2-135m", "dpo", "lora", "none", 2, 128, "evaluate"),
    ("gemma-lora-sft-b2-l256", "gemma-3-270m", "sft", "lora", "none", 2, 256, "evaluate"),
]


def build_inputs(work: Path) -> dict[str, Path]:
    """The tiny model and the SFT / preference data files (deterministic, local)."""
    from ayar.model.tiny import build_tiny_model

    source = TextSource(0, lexicon_size=5000)
    tiny = work / "tiny"
    if not (tiny / "model.safetensors").exists():
        build_tiny_model(tiny, tokenizer_corpus(0, source, documents=2000), vocab_size=2048, hidden_size=256,
                         intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=2)
    convs = conversations(200, 1, source)
    sft = work / "sft.jsonl"
    sft.write_text("".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in convs), encoding="utf-8")
    rng = random.Random(2)
    pairs = work / "pairs.jsonl"
    with pairs.open("w", encoding="utf-8") as fh:
        for c in convs:
            prompt = c[:-1]  # everything before the last reply (system, user, assistant, ..., user)
            chosen = c[-1]["content"]
            rejected = source.text(rng, max(3, len(chosen.split()) + rng.randint(-5, 5)))
            fh.write(json.dumps({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                                 "rejected": [{"role": "assistant", "content": rejected}]}, ensure_ascii=False) + "\n")
    return {"tiny": tiny, "sft": sft, "dpo": pairs}


def recipe_text(cfg: tuple, model: Path, data: Path, out: Path) -> str:
    name, _, method, adapter, quant, mb, length, _ = cfg
    return json.dumps({
        "model": {"path": str(model), "quantization": quant},
        "data": {"train": str(data), "max_length": length},
        "method": method, "adapter": {"type": adapter},
        "train": {"max_steps": STEPS, "micro_batch_size": mb, "tracking": "none", "save_every": 1000,
                  "learning_rate": 1e-4, "seed": 0},
        "output_dir": str(out),
    })


def train(cfg: tuple, model: Path, data: Path, work: Path, reuse: bool) -> Path | None:
    out = work / "runs" / cfg[0]
    if reuse and (out / "summary.json").exists():
        return out
    recipe = work / f"{cfg[0]}.yaml"
    recipe.write_text(recipe_text(cfg, model, data, out), encoding="utf-8")
    # One compute thread: CPU time then measures the work itself, not another process's share of the cores.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "ayar.cli", "train", str(recipe), "--overwrite", "--force"],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"{cfg[0]}: failed\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    print(f"{cfg[0]}: trained in {time.time() - started:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/ayar-plan-bench")
    parser.add_argument("--reuse", action="store_true", help="keep runs that already have a summary.json")
    parser.add_argument("--analyse-only", action="store_true", help="train nothing: analyse the finished runs")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    inputs = build_inputs(work)
    models = {"tiny": inputs["tiny"], **{n: models_dir() / n for n in ("smollm2-135m", "gemma-3-270m")}}
    runs: dict[str, Path] = {}
    skipped = [cfg[0] for cfg in CONFIGS if not (models[cfg[1]] / "config.json").exists()]
    todo = [cfg for cfg in CONFIGS if cfg[0] not in skipped]
    if args.analyse_only:
        done = {cfg[0]: work / "runs" / cfg[0] for cfg in todo if (work / "runs" / cfg[0] / "summary.json").exists()}
        skipped += [cfg[0] + " (not run)" for cfg in todo if cfg[0] not in done]
        analyse(done, work, skipped, [os.getloadavg()[0]])
        return
    loads = [os.getloadavg()[0]]

    def one(cfg):
        loads.append(os.getloadavg()[0])
        return cfg[0], train(cfg, models[cfg[1]], inputs["dpo" if cfg[2] == "dpo" else "sft"], work, args.reuse)

    with ThreadPoolExecutor(PARALLEL) as pool:
        for name, run in pool.map(one, todo):
            if run:
                runs[name] = run
    analyse(runs, work, skipped, loads)


def predict(parts: dict, constants: dict) -> tuple[float, tuple[float, float]]:
    """Peak bytes and the time range of one run from its prediction's parts and fitted constants."""
    memory = parts["fixed_bytes"] + constants["activation_factor"] * parts["activation_bytes"] + \
        constants["overhead_gib"] * 2**30
    fixed = constants["step_overhead_s"] * parts["layer_batches"] + constants["optimizer_s_per_param"] * \
        parts["param_steps"]
    times = tuple(parts["flops"] / (parts["peak"] * m) + fixed for m in reversed(constants["mfu"]))
    return memory, times


def row(name: str, split: str, parts: dict, constants: dict) -> dict:
    memory, (fast, slow) = predict(parts, constants)
    mid = (fast + slow) / 2
    return {"name": name, "split": split, "predicted_peak_bytes": memory, "measured_peak_bytes": parts["measured_bytes"],
            "memory_error": memory / parts["measured_bytes"] - 1, "predicted_seconds": [fast, slow],
            "measured_seconds": parts["measured_s"], "time_error": mid / parts["measured_s"] - 1}


def analyse(runs: dict[str, Path], work: Path, skipped: list[str], loads: list[float]) -> None:
    """Predict every run with constants fitted on the *other* runs (leave one out), and the fixed split
    (calibrate set -> evaluate set) where both have runs; print and store the tables."""
    os.environ["AYAR_HOME"] = str(work / "home")  # nothing is written to the user's home
    from ayar.plan.calibrate import fit, run_parts

    parts = {name: run_parts(run) for name, run in runs.items()}
    peak = next(iter(parts.values()))["peak"]
    rows = [row(name, "leave-one-out", q, fit([o for n, o in parts.items() if n != name], peak))
            for name, q in parts.items()]
    sets = {cfg[0]: cfg[7] for cfg in CONFIGS}
    calib = [q for n, q in parts.items() if sets[n] == "calibrate"]
    if len(calib) >= 2:
        split = fit(calib, peak)
        rows += [row(n, "split", q, split) for n, q in parts.items() if sets[n] == "evaluate"]
    everything = fit(list(parts.values()), peak)
    loo = [r for r in rows if r["split"] == "leave-one-out"]
    result = {"constants_from_all_runs": everything, "rows": rows, "skipped": skipped, "steps": STEPS,
              "memory_within_15pct": sum(abs(r["memory_error"]) <= 0.15 for r in loo),
              "time_within_25pct": sum(abs(r["time_error"]) <= 0.25 for r in loo), "runs": len(loo),
              "measured": {n: json.loads((runs[n] / "summary.json").read_text())["measured"] for n in runs},
              "load_average": [min(loads or [0]), max(loads or [0])]}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "plan_accuracy.json").write_text(json.dumps(result, indent=2, default=lambda o: o.item()), encoding="utf-8")
    print("\n| configuration | predicted by | peak memory predicted / measured | error | time predicted / measured "
          "| error |\n|---|---|---|---|---|---|")
    for r in rows:
        lo, hi = r["predicted_seconds"]
        print(f"| {r['name']} | {r['split']} | {r['predicted_peak_bytes'] / 2**30:.2f} / "
              f"{r['measured_peak_bytes'] / 2**30:.2f} GiB | {r['memory_error']:+.0%} | {lo:.1f}–{hi:.1f} / "
              f"{r['measured_seconds']:.1f} s | {r['time_error']:+.0%} |")
    print(f"\nleave-one-out over {len(loo)} runs: memory within ±15% in {result['memory_within_15pct']}, time within "
          f"±25% in {result['time_within_25pct']}; load average {result['load_average']}; skipped: "
          f"{', '.join(skipped) or 'none'}\nconstants from all runs: {json.dumps(everything, default=lambda o: o.item())}")


if __name__ == "__main__":
    main()
