"""Gemma 3 270M's prefill with frozen weights: torch's unfolded matmul against ayar's contiguous head input.

Usage: python bench/lora_slowdown.py ~/.cache/ayar/models/gemma-3-270m

Times one forward pass of 8x154 random tokens, logits of the last position only (generation's prefill), for
the model as transformers loads it (weights require grad), frozen (as under a LoRA adapter or in eval), and
frozen with :func:`ayar.model.load.contiguous_head_input`. The slowdown first looked like it followed changed
weight values; it follows ``requires_grad``: for the non-contiguous ``hidden[:, -1:, :]`` and a frozen weight,
``torch.matmul`` expands the 262k x 640 head to the batch and copies it before a ``bmm``.
Measured 2026-12-05 on the 2-core CPU (torch 2.13.0): 0.69 s and 6.5 s idle; 0.78 s with the fix, while an install ran.
"""
import resource
import sys
import time

import torch
from transformers import AutoModelForCausalLM

from ayar.model.load import contiguous_head_input


def bench(model, ids, label):
    with torch.no_grad():
        model(input_ids=ids, logits_to_keep=1)
        start = time.perf_counter()
        for _ in range(3):
            model(input_ids=ids, logits_to_keep=1)
        seconds = (time.perf_counter() - start) / 3
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{label:<34} {seconds * 1000:7.0f} ms   peak RSS so far {rss:.2f} GB", flush=True)


def main(path: str) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    ids = torch.randint(100, 20000, (8, 154))
    bench(model, ids, "as loaded (requires grad)")
    model.requires_grad_(False)
    bench(model, ids, "frozen")
    contiguous_head_input(model)
    bench(model, ids, "frozen, contiguous head input")


if __name__ == "__main__":
    main(sys.argv[1])
