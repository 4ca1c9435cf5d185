"""GPU bench: ayar's ``fit`` against TRL's ``SFTTrainer``, LoRA in bf16 and QLoRA nf4, on random-weight Qwen2 shapes.

Nothing is downloaded: each model is built from a config with random weights (Qwen2.5 0.5B
and 1.5B shapes: hidden 896/1536, 24/28 layers, 14/12 heads with 2 KV heads, MLP 4864/8960,
vocabulary 151936, tied embeddings), saved once as safetensors and loaded by both frameworks
from that folder. The data is random token ids, the loss on the last 40% of each row. Both
frameworks get the same rows in the same batches in the same order, with the same LoRA
(r=16, alpha 32, dropout 0, every linear layer), AdamW at 2e-4, cosine, clipping at 1.0.

Reported per run: tokens/s (real tokens, timed steps after the warm-up), peak
``torch.cuda.max_memory_allocated``, model FLOP utilisation against a bf16 matmul
measured in the same process (``flops.py`` says what is counted), and the loss curves.

Usage::

    bench/gpu.sh                      # the full bench on one CUDA GPU (under 8 minutes)
    python bench/gpu.py --dry-run     # tiny shapes on the CPU: checks the script end to end
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from flops import Shape, matmul_peak, step_flops  # noqa: E402

# Qwen2.5 shapes (the published configs' dimensions; the weights here are random).
SHAPES = {
    "0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
             "intermediate_size": 4864, "vocab_size": 151936, "tie_word_embeddings": True},
    "1.5b": {"hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
             "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True},
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128, "vocab_size": 512, "tie_word_embeddings": True},
}
LORA_R, LORA_ALPHA = 16, 32.0
PAD, EOS = 0, 1


def build_model_folder(name: str, root: Path, device: str) -> Path:
    """A Qwen2 model of shape ``name`` with random weights (seed 0) and a small tokenizer, saved once."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from ayar.model.tiny import build_tokenizer

    out = root / f"qwen2-{name}"
    if (out / "config.json").exists():
        return out
    config = Qwen2Config(**SHAPES[name], max_position_embeddings=4096, rope_theta=1e6, rms_norm_eps=1e-6,
                         bos_token_id=None, eos_token_id=EOS, pad_token_id=PAD)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    # The token ids are random; the tokenizer only gives TRL its pad and EOS tokens (ids 0 and 1).
    build_tokenizer(["a b c d e f"] * 8, vocab_size=300).save_pretrained(out)
    del model
    return out


def make_data(vocab: int, rows: int, batch: int, seq: int, seed: int) -> dict:
    """Random rows of seq/2..seq tokens, the loss on the last 40%, in ayar's batch order."""
    from ayar.train.batching import micro_batches

    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(rows):
        n = rng.randint(seq // 2, seq)
        row = [rng.randrange(2, vocab) for _ in range(n)]
        prompt = int(n * 0.6)
        ids.append(row)
        labels.append([-100] * prompt + row[prompt:])
    stream = micro_batches(rows, batch, seed)
    return {"input_ids": ids, "labels": labels, "batches": [next(stream) for _ in range(rows // batch)]}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _memory_start(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # CPU: the process's peak RSS so far


def run_ayar(folder: Path, data: dict, spec: dict) -> dict:
    import torch
    from accelerate import Accelerator

    from ayar.chat.tokenize import EncodedExample
    from ayar.model.adapters import attach_adapter
    from ayar.model.load import load_model
    from ayar.recipe import AdapterSection, TrainSection
    from ayar.train.loop import fit

    device = spec["device"]
    model = load_model(str(folder), dtype=torch.bfloat16, device=torch.device(device),
                       quantization=spec["quantization"])
    torch.manual_seed(spec["seed"])
    model = attach_adapter(model, AdapterSection(r=LORA_R, alpha=LORA_ALPHA, dropout=0.0))
    examples = [EncodedExample(i, lab) for i, lab in zip(data["input_ids"], data["labels"], strict=True)]
    cfg = TrainSection(learning_rate=2e-4, max_steps=spec["steps"], micro_batch_size=spec["batch"],
                       warmup_ratio=0.0, max_grad_norm=1.0, precision="bf16", seed=spec["seed"], log_every=1,
                       save_every=None, tracking="none")
    times = []

    def progress(step, total, record):  # the record's loss was read with float(): the step has finished
        _sync(device)
        times.append(time.perf_counter())

    accelerator = Accelerator(mixed_precision="no", cpu=device == "cpu")
    result = fit(model, examples, cfg, pad_id=PAD, accelerator=accelerator, progress=progress)
    return {"times": times, "losses": [r["loss"] for r in result.history]}


def run_trl(folder: Path, data: dict, spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ayar.model.load import quantization_config

    device = spec["device"]
    order = [i for batch in data["batches"] for i in batch]
    dataset = Dataset.from_dict({"input_ids": [data["input_ids"][i] for i in order],
                                 "assistant_masks": [[int(t != -100) for t in data["labels"][i]] for i in order]})
    quant = quantization_config(spec["quantization"], torch.bfloat16)
    extra = {"quantization_config": quant, "device_map": {"": device}} if quant else {}
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16, use_safetensors=True, **extra)
    if not quant:
        model.to(device)
    args = SFTConfig(
        output_dir=spec["workdir"] + "/trl", max_steps=spec["steps"], per_device_train_batch_size=spec["batch"],
        learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        bf16=True, use_cpu=device == "cpu", seed=spec["seed"], data_seed=spec["seed"],
        gradient_checkpointing=False, max_length=spec["seq"], packing=False, padding_free=False,
        train_sampling_strategy="sequential", logging_steps=1, save_strategy="no", report_to="none",
        eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            times.append(time.perf_counter())

    torch.manual_seed(spec["seed"])
    peft = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(str(folder)), peft_config=peft,
                         callbacks=[Clock()])
    if trainer.train_dataset["input_ids"] != [data["input_ids"][i] for i in order]:
        raise SystemExit("TRL's prepared ids differ from ayar's: the runs would not train on the same tokens")
    trainer.train()
    return {"times": times, "losses": [r["loss"] for r in trainer.state.log_history if "loss" in r]}


def summarise(raw: dict, data: dict, spec: dict, shape: Shape, peak: float) -> dict:
    warm = spec["warmup"]
    timed = range(warm, spec["steps"])
    seconds = raw["times"][-1] - raw["times"][warm - 1]
    lengths = [len(data["input_ids"][i]) for s in timed for i in data["batches"][s]]
    targets = sum(sum(t != -100 for t in data["labels"][i][1:]) for s in timed for i in data["batches"][s])
    flops = step_flops(shape, lengths, targets, lora_r=LORA_R)
    return {"tokens_per_s": sum(lengths) / seconds, "s_per_step": seconds / len(timed),
            "mfu": flops / seconds / peak, "model_tflops_per_s": flops / seconds / 1e12,
            "losses": raw["losses"], "timed_steps": len(timed), "timed_tokens": sum(lengths)}


def one_run(framework: str, folder: Path, data: dict, spec: dict, shape: Shape, peak: float) -> dict:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # each run sets its own precision, in one process
    _memory_start(spec["device"])
    t0 = time.perf_counter()
    raw = (run_ayar if framework == "ayar" else run_trl)(folder, data, spec)
    out = summarise(raw, data, spec, shape, peak)
    out.update(peak_mib=_peak_mib(spec["device"]), wall_s=time.perf_counter() - t0)
    return out


def compare(a: dict, t: dict) -> dict:
    diffs = [abs(x - y) for x, y in zip(a["losses"], t["losses"], strict=False)]
    return {"speed": a["tokens_per_s"] / t["tokens_per_s"], "memory": a["peak_mib"] / t["peak_mib"],
            "max_loss_diff": max(diffs), "first_loss": (a["losses"][0], t["losses"][0]),
            "last_loss": (a["losses"][-1], t["losses"][-1])}


def markdown(results: list[dict]) -> str:
    lines = ["| shape | mode | framework | tokens/s | MFU | peak alloc (MiB) | ayar/TRL speed | ayar/TRL memory "
             "| max loss diff |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        c = r.get("compare", {})
        for fw in ("ayar", "trl"):
            x = r.get(fw)
            if not x:
                continue
            extra = (f"{c['speed']:.2f} | {c['memory']:.2f} | {c['max_loss_diff']:.4f}" if c and fw == "ayar"
                     else " | | ")
            lines.append(f"| {r['shape']} | {r['mode']} | {fw} | {x['tokens_per_s']:.0f} | {x['mfu']:.1%} | "
                         f"{x['peak_mib']:.0f} | {extra} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, 4 steps: checks the script")
    parser.add_argument("--shapes", default="1.5b,0.5b")
    parser.add_argument("--modes", default="lora,qlora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--budget-s", type=float, default=420, help="start no new run after this many seconds")
    parser.add_argument("--out", default="bench/results/gpu.json")
    parser.add_argument("--workdir", default=None)
    opts = parser.parse_args()
    import torch

    began = time.perf_counter()
    if opts.dry_run:
        device, shapes, opts.steps, opts.warmup, opts.batch, opts.seq = "cpu", ["tiny"], 4, 2, 2, 64
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU here; use --dry-run to check the script on the CPU")
        device, shapes = "cuda", opts.shapes.split(",")
    modes = opts.modes.split(",")
    if "qlora" in modes and not _has_bitsandbytes():
        print("bitsandbytes is not installed: QLoRA runs skipped", file=sys.stderr)
        modes.remove("qlora")
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="ayar-gpu-bench-"))
    peak = matmul_peak(device)
    env = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
           "bf16_matmul_tflops": peak / 1e12, "versions": _versions()}
    print(f"measured bf16 matmul peak: {peak / 1e12:.1f} TFLOP/s on {env['device']}", file=sys.stderr)
    results: list[dict] = []
    for name in shapes:
        folder = build_model_folder(name, workdir, device)
        shape = Shape.of(_config(folder))
        data = make_data(shape.vocab, opts.steps * opts.batch, opts.batch, opts.seq, opts.seed)
        for mode in modes:
            entry = {"shape": name, "mode": mode}
            results.append(entry)
            for fw in ("ayar", "trl"):
                if time.perf_counter() - began > opts.budget_s:
                    entry["skipped"] = "time budget"
                    break
                spec = {"device": device, "quantization": "nf4" if mode == "qlora" else "none",
                        "steps": opts.steps, "warmup": opts.warmup, "batch": opts.batch, "seq": opts.seq,
                        "seed": opts.seed, "workdir": str(workdir)}
                entry[fw] = one_run(fw, folder, data, spec, shape, peak)
                print(f"{name} {mode} {fw}: {entry[fw]['tokens_per_s']:.0f} tokens/s, MFU {entry[fw]['mfu']:.1%}, "
                      f"peak {entry[fw]['peak_mib']:.0f} MiB, {entry[fw]['wall_s']:.0f} s", file=sys.stderr)
            if "ayar" in entry and "trl" in entry:
                entry["compare"] = compare(entry["ayar"], entry["trl"])
            _write(opts.out, env, opts, results)
    print(markdown(results))
    print(f"total {time.perf_counter() - began:.0f} s; results in {opts.out}")


def _config(folder: Path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(folder))


def _has_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("transformers", "trl", "peft", "accelerate", "bitsandbytes"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def _write(path: str, env: dict, opts, results: list[dict]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"environment": env, "options": vars(opts), "results": results}, indent=1))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
