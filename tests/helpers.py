"""Helpers shared by tests: a small learnable chat task and a corpus for tiny tokenizers."""

from __future__ import annotations

import json
import random

COLOURS = ["kırmızı", "mavi", "yeşil", "sarı", "siyah", "beyaz", "mor", "turuncu", "gri", "pembe"]
ITEMS = ["ayakkabı", "çanta", "gömlek", "kazak", "şapka", "masa", "sandalye", "lamba", "kupa", "defter"]


def colour_conversations(n: int, seed: int = 0) -> list[dict]:
    """A small learnable chat task: name the colour and item of a product as JSON."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        colour, item = rng.choice(COLOURS), rng.choice(ITEMS)
        out.append({"messages": [
            {"role": "system", "content": "Ürünün rengini ve türünü JSON olarak ver."},
            {"role": "user", "content": f"Ürün: {colour} renkli güzel bir {item}"},
            {"role": "assistant", "content": json.dumps({"renk": colour, "tür": item}, ensure_ascii=False)},
        ]})
    return out


def corpus() -> list[str]:
    texts = []
    for record in colour_conversations(300, seed=1):
        texts.extend(m["content"] for m in record["messages"])
    texts += ["İstanbul'da güzel bir gün. Işık, ılık rüzgâr ve çay.", "The quick brown fox jumps over the lazy dog."]
    return texts


def write_jsonl(path, records) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
