"""Shared pieces of the benchmarks: a synthetic chat corpus, a ~110M Llama model, and the batch plan.

Everything is generated locally and deterministically from a seed; nothing is downloaded.
The model folder (random weights, tokenizer trained on the generated text) is built once
with :func:`ayar.model.tiny.build_tiny_model` and cached under the temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

# The model of issue 3: Llama architecture, hidden 768, 12 layers, 12 heads, MLP 2048, vocab 32000.
# With tied embeddings this is 24.6M (embeddings) + 85.0M (blocks) = 109.6M parameters.
MODEL_SHAPE = {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_layers": 12,
               "num_heads": 12, "num_kv_heads": 12, "max_positions": 1024}
CACHE_VERSION = "1"
LEXICON_SEED = 0  # one lexicon for the tokenizer corpus and the conversations, whatever the run seed

_ONSETS = ["", "b", "c", "ç", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "ş", "t", "v", "y", "z",
           "br", "kr", "st", "tr"]
_VOWELS = ["a", "e", "ı", "i", "o", "ö", "u", "ü"]
_CODAS = ["", "", "", "n", "r", "l", "k", "m", "s", "t"]


def lexicon(rng: random.Random, size: int) -> list[str]:
    """``size`` distinct pseudo-words of one to four syllables (Turkish-looking letters)."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        n = rng.choices([1, 2, 3, 4], weights=[2, 5, 4, 2])[0]
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class TextSource:
    """Zipf-distributed words from a fixed lexicon, made into sentences."""

    def __init__(self, seed: int, lexicon_size: int = 60_000):
        rng = random.Random(seed)
        self.words = lexicon(rng, lexicon_size)
        weights = [1.0 / (rank + 2.7) for rank in range(lexicon_size)]
        total = sum(weights)
        self.cum = list(_accumulate(w / total for w in weights))

    def text(self, rng: random.Random, n_words: int) -> str:
        picked = rng.choices(self.words, cum_weights=self.cum, k=n_words)
        out, start = [], 0
        while start < n_words:
            end = min(n_words, start + rng.randint(5, 16))
            sentence = " ".join(picked[start:end])
            out.append(sentence[:1].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!", ":"]))
            start = end
        return " ".join(out)


def _accumulate(values):
    total = 0.0
    for v in values:
        total += v
        yield total


def conversations(n: int, seed: int, source: TextSource) -> list[list[dict]]:
    """``n`` conversations of varied length; prompts (system, user turns, headers) are ~60% of the tokens.

    Total length is log-uniform between about 40 and 700 tokens (the longest are cut to max_length);
    a quarter have a system message and a third have two user/assistant rounds.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = int(math.exp(rng.uniform(math.log(20), math.log(330))))
        prompt_share = rng.uniform(0.45, 0.7)
        rounds = 2 if rng.random() < 1 / 3 and words > 60 else 1
        prompt_words = max(3, round(words * prompt_share))
        answer_words = max(2, words - prompt_words)
        messages = []
        if rng.random() < 0.25:
            system = max(3, prompt_words // 5)
            messages.append({"role": "system", "content": source.text(rng, system)})
            prompt_words -= system
        for _ in range(rounds):
            p = max(2, prompt_words // rounds)
            a = max(2, answer_words // rounds)
            messages.append({"role": "user", "content": source.text(rng, p)})
            messages.append({"role": "assistant", "content": source.text(rng, a)})
        out.append(messages)
    return out


def tokenizer_corpus(seed: int, source: TextSource, documents: int = 30_000) -> list[str]:
    rng = random.Random(seed + 1)
    return [source.text(rng, rng.randint(20, 120)) for _ in range(documents)]


def model_dir(cache_dir: str | None = None) -> Path:
    """Build (once) and return the benchmark model folder."""
    seed = LEXICON_SEED
    key = hashlib.sha256(json.dumps([CACHE_VERSION, seed, MODEL_SHAPE]).encode()).hexdigest()[:12]
    root = Path(cache_dir or os.path.join(tempfile.gettempdir(), "ayar-bench"))
    out = root / f"llama110m-{key}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from ayar.model.tiny import build_tiny_model

    source = TextSource(seed)
    tmp = root / f".tmp-{key}-{os.getpid()}"
    build_tiny_model(tmp, tokenizer_corpus(seed, source), arch="llama", template="chatml", seed=seed,
                     **MODEL_SHAPE)
    os.replace(tmp, out)
    return out


@dataclass
class BenchData:
    """Tokenised examples (from ``encode_conversation``) and the batches of the run, in order."""

    input_ids: list[list[int]]
    labels: list[list[int]]
    batches: list[list[int]]  # example indices of each micro-batch (= optimizer step), in training order
    pad_id: int

    def step_tokens(self, step: int) -> dict[str, int]:
        """Token counts of a step's batch: padded, real (non-padding) and target tokens."""
        lengths = [len(self.input_ids[i]) for i in self.batches[step]]
        targets = sum(sum(label != -100 for label in self.labels[i][1:]) for i in self.batches[step])
        return {"padded": max(lengths) * len(lengths), "real": sum(lengths), "targets": targets}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> BenchData:
        return cls(**json.loads(Path(path).read_text()))


def build_data(model_path: Path, *, steps: int, batch_size: int, max_length: int, seed: int) -> BenchData:
    """Encode ``steps * batch_size`` conversations with ayar and lay out ayar's batch order.

    The order is ``ayar.train.batching.micro_batches`` with the run's seed, the order ``fit``
    reads; the TRL run gets the same examples in that order with a sequential sampler, so both
    frameworks train on identical batches.
    """
    from ayar.chat.tokenize import ConversationError, encode_conversation
    from ayar.model.load import load_tokenizer
    from ayar.train.batching import micro_batches

    tokenizer = load_tokenizer(str(model_path))
    n = steps * batch_size
    encoded = []  # the first n conversations that keep a target within max_length (a real model's
    for m in conversations(2 * n + 16, seed, TextSource(LEXICON_SEED)):  # tokenizer splits these words finer)
        try:
            encoded.append(encode_conversation(tokenizer, m, max_length=max_length))
        except ConversationError:
            continue
        if len(encoded) == n:
            break
    stream = micro_batches(n, batch_size, seed)
    batches = [next(stream) for _ in range(steps)]
    return BenchData([e.input_ids for e in encoded], [e.labels for e in encoded], batches,
                     tokenizer.pad_token_id)


# ----------------------------------------------------------------------------- shared by the benchmarks

# The adapter every benchmark trains, for ayar (recipe) and for TRL (peft config).
LORA = {"r": 16, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear"}


def lora_config():
    """Field for field what ayar.model.adapters.attach_adapter builds from a recipe adapter section = LORA."""
    from peft import LoraConfig

    return LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      target_modules=LORA["target_modules"], task_type="CAUSAL_LM")


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def precision_for_this_cpu(requested: str) -> str:
    """``auto``: bf16 on CPUs with AMX or AVX512-BF16, else fp32."""
    if requested != "auto":
        return requested
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "bf16" if "amx_bf16" in flags or "avx512_bf16" in flags else "fp32"


# ----------------------------------------------------------------------------- real models and MFU

REAL_MODELS = ("gemma-3-270m", "smollm2-135m")  # fetched with `ayar model fetch NAME`


def resolve_model(name: str | None, cache_dir: str | None = None) -> Path:
    """The benchmark's 110M Llama (None or ``llama110m``), a fetched real model by name, or a model folder."""
    if not name or name == "llama110m":
        return model_dir(cache_dir)
    if name in REAL_MODELS:
        from ayar.paths import models_dir

        path = models_dir() / name
        if not (path / "config.json").exists():
            raise SystemExit(f"{path} does not exist: fetch the model first with `ayar model fetch {name}`")
        return path
    if not (Path(name) / "config.json").exists():
        raise SystemExit(f"--model {name}: not one of llama110m, {', '.join(REAL_MODELS)}, nor a model folder")
    return Path(name)


def describe_model(path: Path) -> str:
    """One line on a model folder's architecture and size."""
    from flops import Shape
    from transformers import AutoConfig

    s = Shape.of(AutoConfig.from_pretrained(str(path)))
    embed = s.vocab * s.hidden
    return (f"{path.name}: {s.layers} layers, hidden {s.hidden}, {s.heads} heads ({s.kv_heads} KV, head dim "
            f"{s.head_dim}), MLP {s.intermediate}, vocabulary {s.vocab}; {s.block_params / 1e6:.0f}M block + "
            f"{embed / 1e6:.0f}M embedding parameters")


def model_shape(path: str | Path):
    from flops import Shape
    from transformers import AutoConfig

    return Shape.of(AutoConfig.from_pretrained(str(path)))
