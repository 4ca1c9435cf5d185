"""Reproduce a slowdown seen on this CPU: Gemma 3 270M with changed weights forwards several times slower.

Usage: python bench/lora_slowdown.py ~/.cache/ayar/models/gemma-3-270m

Times one forward pass of 8x154 random tokens (logits of the last position only) for the base in bf16,
the same model with a random-weight LoRA attached (PEFT, all linear layers, r 16), and that adapter merged
back into plain bf16 weights. Measured 2026-12-05 under load on 2 cores: 10.7 s, 44 s, 61 s; peak RSS
1.1 GB -> 3.8 GB. The merged model has the base architecture and dtype, so the cost follows the weight values.
Open: issue 18.
"""
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

torch.manual_seed(0)
p = sys.argv[1]
m = AutoModelForCausalLM.from_pretrained(p, dtype=torch.bfloat16).eval()
ids = torch.randint(100, 20000, (8, 154))
def bench(model, label):
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)
        t = time.perf_counter()
        for _ in range(3):
            model(input_ids=ids, logits_to_keep=1)
        dt = (time.perf_counter() - t) / 3
    import resource
    print(f"{label}: {dt*1000:.0f} ms  maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1e6:.2f} GB", flush=True)
bench(m, "base")
print("param dtypes", {str(q.dtype) for q in m.parameters()})
cfg = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
pm = get_peft_model(m, cfg)
print("lora dtypes", {str(q.dtype) for n, q in pm.named_parameters() if "lora" in n})
bench(pm, "peft (random B)")
mm = pm.merge_and_unload()
print("merged dtypes", {str(q.dtype) for q in mm.parameters()})
bench(mm, "merged")
