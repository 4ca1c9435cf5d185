"""Profile one SFT training step (forward, backward, optimizer) of ayar or TRL with torch.profiler.

The step is the same as in ``sft_vs_trl.py``: the ~110M Llama with LoRA r=16 on all linear
layers, bf16 autocast (fp32 weights), one micro-batch of the benchmark's data.

Usage::

    python bench/profile_step.py --framework ayar [--batch 3] [--rows 25] [--threads 1] [--weights float32]
    python bench/profile_step.py --framework trl
    python bench/profile_step.py --model gemma-3-270m --weights bfloat16

The last lines say what share of the step's operator time is matrix products and which
other operators (casts, copies, element-wise work, the optimizer) take the rest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import build_data, resolve_model  # noqa: E402

# Operators that are matrix products (the work MFU counts); everything else is overhead to remove.
MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product",
              "aten::_flash_attention", "aten::_efficient_attention", "mkldnn", "onednn")


def not_matrix_report(prof, rows: int = 15) -> str:
    """Share of the step's self CPU time in matrix products, and the largest other operators."""
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "mkldnn" in e.key]
    total = sum(e.self_cpu_time_total for e in events) or 1
    matrix = [e for e in events if e.key.startswith(MATRIX_OPS)]
    other = sorted((e for e in events if e not in matrix), key=lambda e: -e.self_cpu_time_total)
    share = sum(e.self_cpu_time_total for e in matrix) / total
    lines = [f"matrix products: {share:.1%} of the operators' self CPU time; the rest, largest first:"]
    for e in other[:rows]:
        lines.append(f"  {e.key:<40} {e.self_cpu_time_total / 1e3:9.1f} ms  {e.self_cpu_time_total / total:6.1%}"
                     f"  {e.count:6d} calls")
    return "\n".join(lines)


def ayar_step_fn(path, precision, weights):
    import torch

    from ayar.model.adapters import attach_adapter
    from ayar.model.load import load_model
    from ayar.recipe import AdapterSection
    from ayar.train.losses import TargetLoss

    model = load_model(str(path), dtype=weights)
    torch.manual_seed(0)
    model = attach_adapter(model, AdapterSection(r=16, alpha=32, dropout=0.0))
    loss_model = TargetLoss(model).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    amp = torch.bfloat16 if precision == "bf16" else None

    def step(batch):
        with torch.profiler.record_function("forward"), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            loss_sum, n = loss_model(**batch)
        loss = loss_sum / n
        with torch.profiler.record_function("backward"):
            loss.backward()
        with torch.profiler.record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def trl_step_fn(path, precision, weights):
    """TRL's loss path: the fused (chunked) LM head it patches onto the model, outside the Trainer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=weights)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM")).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    amp = torch.bfloat16 if precision == "bf16" else None

    def step(batch):
        with torch.profiler.record_function("forward"), torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            out = model(**batch, use_cache=False, fused_lm_head=True)
        with torch.profiler.record_function("backward"):
            out.loss.backward()
        with torch.profiler.record_function("optimizer"):
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    return step


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ayar.chat.tokenize import EncodedExample
    from ayar.train.batching import collate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["ayar", "trl"], default="ayar")
    parser.add_argument("--batch", type=int, default=3, help="which batch of the benchmark plan to use")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--sort", default="self_cpu_time_total")
    parser.add_argument("--trace", default=None, help="write a Chrome trace here")
    parser.add_argument("--model", default="llama110m", help="llama110m, gemma-3-270m, smollm2-135m or a folder")
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)

    path = resolve_model(opts.model)
    data = build_data(path, steps=opts.batch + 1, batch_size=opts.batch_size, max_length=512, seed=42)
    examples = [EncodedExample(data.input_ids[i], data.labels[i]) for i in data.batches[opts.batch]]
    batch = collate(examples, data.pad_id)
    print("batch", tuple(batch["input_ids"].shape), data.step_tokens(opts.batch))
    step = (ayar_step_fn if opts.framework == "ayar" else trl_step_fn)(path, opts.precision,
                                                                       getattr(torch, opts.weights))
    step(batch)  # warm-up (oneDNN primitive creation)
    t0, c0 = time.perf_counter(), time.process_time()
    step(batch)
    print(f"unprofiled step: {time.perf_counter() - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step(batch)
    table = prof.key_averages().table(sort_by=opts.sort, row_limit=opts.rows)
    print(table)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by=opts.sort, row_limit=opts.rows))
    print(not_matrix_report(prof))
    if opts.trace:
        prof.export_chrome_trace(opts.trace)


if __name__ == "__main__":
    main()
