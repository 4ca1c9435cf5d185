"""Checks that an export computes what the trained model computes, before it is published.

Merged weights (:func:`check_merge`): the logits of the merged fp32 model must
equal those of base + unmerged adapter on the verification prompts, to
``MERGE_TOLERANCE`` (max absolute difference, relative to the largest logit when
that exceeds 1). The folder written must load back with ``from_pretrained`` to
exactly the weights in memory (:func:`check_saved_model`).

GGUF (:func:`check_gguf`), through llama-cpp-python with an f32 KV cache (so that
only the file is tested, not the cache precision):

- tokenisation: ``Llama(vocab_only=True).tokenize`` gives the HF tokenizer's ids
  for every text of :data:`TOKENIZER_TEXTS` and every rendered prompt;
- generation: from the same prompt ids, llama.cpp's greedy continuation of
  ``CONTINUATION_TOKENS`` tokens equals the HF model's. At a position where the two
  differ, the HF logits of the two tokens must be within ``NEAR_TIE[type]`` (a tie
  that rounding may break either way); otherwise the export is refused;
- logits, on the positions both runtimes saw the same prefix: f32 files must match
  to ``F32_LOGIT_TOLERANCE``; q8_0 files must pick HF's top token on at least
  ``Q8_MIN_TOP1`` of the positions (8-bit weights move logits by about 1e-2 of their
  range, enough to swap near-equal candidates, not a confident choice).

Every tolerance is relative to ``max(1, largest |logit|)``. A failed check raises
:class:`VerificationError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ayar.errors import AyarError

MERGE_TOLERANCE = 1e-4
F32_LOGIT_TOLERANCE = 1e-3
NEAR_TIE = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2, "q8_0": 1e-1}
Q8_MIN_TOP1 = 0.9
CONTINUATION_TOKENS = 16
GGML_TYPE_F32 = 0  # llama.cpp's ggml_type for the KV cache

TOKENIZER_TEXTS = (
    "İstanbul'da güzel bir gün",
    "IŞIK ılık ŞİŞLİ Çağrı Öğün Ünye: ç ğ ı ö ş ü",
    "Fiyat: 1.299,90 TL (KDV dahil), %18 indirim; sipariş no 2026-000123.",
    "The quick brown fox's den isn't there; they'll've gone.",
    "  leading spaces,\ttabs\nand\n\n\nnewlines   ",
    "e-posta: ornek@firma.com.tr 🙂 中文 ελληνικά",
)

PROMPTS = (
    [{"role": "system", "content": "Kısa ve nazik cevap ver."},
     {"role": "user", "content": "İstanbul'da hafta sonu ne yapılır?"}],
    [{"role": "user", "content": "Ürün: mavi renkli güzel bir masa"}],
    [{"role": "user", "content": "Summarise in one sentence: the quick brown fox jumps over the lazy dog."}],
)


class VerificationError(AyarError):
    """An export does not reproduce the trained model; nothing was published."""


def prompt_texts(tokenizer) -> list[str]:
    """The verification prompts rendered with the chat template, generation prompt appended."""
    return [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in PROMPTS]


def prompt_ids(tokenizer) -> list[list[int]]:
    """:func:`prompt_texts` as ids, without adding special tokens again: the template wrote them."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompt_texts(tokenizer)]


@torch.no_grad()
def logits(model, ids: list[int]) -> np.ndarray:
    """``(len(ids), vocab)`` fp32 logits of one sequence."""
    device = next(model.parameters()).device
    return model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()


def _scale(reference: np.ndarray) -> float:
    return max(1.0, float(np.abs(reference).max()))


def check_merge(reference: list[np.ndarray], merged, prompts: list[list[int]]) -> dict:
    """Compare the merged model's logits with the unmerged model's (``reference``, one array per prompt).

    Returns:
        ``{"max_abs_logit_diff", "tolerance"}`` for the manifest.

    Raises:
        VerificationError: a difference above ``MERGE_TOLERANCE``.
    """
    worst, tolerance = 0.0, 0.0
    for ids, expected in zip(prompts, reference, strict=True):
        got = logits(merged, ids)
        worst = max(worst, float(np.abs(got - expected).max()))
        tolerance = max(tolerance, MERGE_TOLERANCE * _scale(expected))
    if not worst <= tolerance:  # also catches NaN
        raise VerificationError(f"merged weights do not reproduce base + adapter: max |logit difference| {worst:.3g} "
                                f"> {tolerance:.3g}; the export was not written")
    return {"max_abs_logit_diff": worst, "tolerance": tolerance}


def check_saved_model(folder: Path, model, tokenizer) -> dict:
    """Load ``folder`` with ``from_pretrained`` and compare it with ``model`` and ``tokenizer`` in memory.

    Raises:
        VerificationError: a weight differs (bit for bit), the tokenizer tokenises differently,
            or the generation config does not stop at the end of a turn.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from ayar.chat.templates import end_of_turn_ids

    loaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=model.dtype, use_safetensors=True)
    expected = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        if name not in expected or not torch.equal(tensor, expected[name]):
            raise VerificationError(f"{folder}: weight {name} reads back different from the merged model")
    reloaded = AutoTokenizer.from_pretrained(str(folder))
    for text in TOKENIZER_TEXTS:
        if reloaded(text)["input_ids"] != tokenizer(text)["input_ids"]:
            raise VerificationError(f"{folder}: the saved tokenizer tokenises {text!r} differently")
    stops = GenerationConfig.from_pretrained(str(folder)).eos_token_id
    missing = set(end_of_turn_ids(tokenizer)) - set(stops if isinstance(stops, list) else [stops])
    if missing:
        raise VerificationError(f"{folder}: generation_config.json does not stop at end-of-turn id(s) {sorted(missing)}")
    return {"weights_identical": True, "tokenizer_identical": True, "stop_ids": stops}


@dataclass
class Reference:
    """What the HF model does with one prompt: greedy continuation and logits over prompt + continuation."""

    prompt: list[int]
    continuation: list[int]
    logits: np.ndarray  # (len(prompt) + len(continuation), vocab)


@torch.no_grad()
def hf_reference(model, prompts: list[list[int]], n_tokens: int = CONTINUATION_TOKENS) -> list[Reference]:
    """Greedy continuations (no stop token: every step is compared) and teacher-forced logits.

    Each step runs the whole sequence again (no KV cache): 16 short forward passes per
    prompt, and no dependence on the cache API of the transformers version.
    """
    references = []
    for ids in prompts:
        sequence = list(ids)
        for _ in range(n_tokens):
            sequence.append(int(logits(model, sequence)[-1].argmax()))
        references.append(Reference(ids, sequence[len(ids):], logits(model, sequence)))
    return references


def check_tokenizer(path: Path, tokenizer) -> dict:
    """llama.cpp's tokenisation of the GGUF vocabulary against the HF tokenizer.

    Raises:
        VerificationError: any text tokenised differently.
    """
    from llama_cpp import Llama

    texts = list(TOKENIZER_TEXTS) + prompt_texts(tokenizer)
    vocab = Llama(str(path), vocab_only=True, verbose=False)
    try:
        for text in texts:
            expected = tokenizer(text, add_special_tokens=False)["input_ids"]
            got = vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if got != expected:
                raise VerificationError(f"{path.name}: llama.cpp tokenises {text!r} as {got[:12]}..., the HF tokenizer "
                                        f"as {expected[:12]}...; the pre-tokenizer does not match")
    finally:
        vocab.close()
    return {"texts": len(texts), "identical": True}


def check_gguf(path: Path, gguf_type: str, references: list[Reference]) -> dict:
    """Generate with the GGUF file in llama.cpp and compare with the HF references (see the module doc).

    Returns:
        The measurements for the manifest: continuation tokens that agree, max logit difference,
        top-1 agreement and the tolerances applied.

    Raises:
        VerificationError: a check fails.
    """
    from llama_cpp import Llama

    longest = max(len(r.prompt) + len(r.continuation) for r in references)
    llm = Llama(str(path), n_ctx=longest + 8, logits_all=True, verbose=False, type_k=GGML_TYPE_F32,
                type_v=GGML_TYPE_F32, n_threads=max(1, min(8, os.cpu_count() or 1)))
    worst, agree, positions, matched = 0.0, 0, 0, []
    try:
        for ref in references:
            got, scores = _greedy(llm, ref.prompt, len(ref.continuation))
            same = next((i for i, (a, b) in enumerate(zip(got, ref.continuation, strict=True)) if a != b), len(got))
            matched.append(same)
            seen = len(ref.prompt) + same  # positions whose prefix both runtimes share
            expected = ref.logits[:seen]
            scale = _scale(ref.logits)
            worst = max(worst, float(np.abs(scores[:seen] - expected).max()) / scale)
            agree += int((scores[:seen].argmax(-1) == expected.argmax(-1)).sum())
            positions += seen
            if same < len(got) and gguf_type != "q8_0":
                at = len(ref.prompt) + same - 1
                margin = float(ref.logits[at, ref.continuation[same]] - ref.logits[at, got[same]]) / scale
                if margin > NEAR_TIE[gguf_type]:
                    raise VerificationError(
                        f"{path.name}: llama.cpp's greedy continuation leaves the HF model's after {same} of "
                        f"{len(got)} tokens (token {got[same]} instead of {ref.continuation[same]}, which HF prefers "
                        f"by {margin:.3g} of the logit range > {NEAR_TIE[gguf_type]}); the GGUF file is wrong")
    finally:
        llm.close()
    top1 = agree / positions
    if gguf_type == "f32" and not worst <= F32_LOGIT_TOLERANCE:
        raise VerificationError(f"{path.name}: logits differ from the HF model by {worst:.3g} of their range "
                                f"(> {F32_LOGIT_TOLERANCE}); the GGUF file is wrong")
    if gguf_type == "q8_0" and top1 < Q8_MIN_TOP1:
        raise VerificationError(f"{path.name}: llama.cpp picks the HF model's top token on only {top1:.0%} of "
                                f"positions (< {Q8_MIN_TOP1:.0%}); the GGUF file is wrong")
    return {"continuation_tokens_matched": matched, "continuation_tokens": CONTINUATION_TOKENS,
            "max_logit_diff_relative": worst, "top1_agreement": top1,
            "tolerances": {"near_tie": NEAR_TIE[gguf_type], "f32_logits": F32_LOGIT_TOLERANCE,
                           "q8_min_top1": Q8_MIN_TOP1}}


def _greedy(llm, prompt: list[int], n_tokens: int) -> tuple[list[int], np.ndarray]:
    """llama.cpp's greedy continuation and its logits over prompt + continuation."""
    llm.reset()
    llm.eval(prompt)
    tokens = []
    for _ in range(n_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        llm.eval([token])
    return tokens, np.array(llm.scores[: llm.n_tokens], dtype=np.float32)
