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
  to ``F32_LOGIT_TOLERANCE``; quantised files must pick HF's top token on at least
  ``MIN_TOP1[type]`` of the positions (8-bit weights move logits by about 1e-2 of their
  range, enough to swap near-equal candidates, not a confident choice; 4- to 6-bit
  K-quants move them further). The measured agreement is recorded in the manifest.

LoRA as GGUF (:func:`check_lora`): the base GGUF with the adapter GGUF applied by
llama.cpp must continue :data:`LORA_PROMPTS` greedily as the merged GGUF does (a
difference only at a near tie of the merged file's logits, as above).

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
NEAR_TIE = {"f32": 1e-3, "f16": 1e-2, "bf16": 5e-2}
# Least top-1 agreement with the HF model for quantised files: gates that a wrong file (bad RoPE layout,
# corrupted tensor) fails far below; the figures measured on the tested models are in the README.
MIN_TOP1 = {"q8_0": 0.9, "q6_k": 0.85, "q5_k_m": 0.75, "q4_k_m": 0.7}
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

LORA_PROMPTS = (
    [{"role": "user", "content": "Ankara'da kışın hava nasıl olur?"}],
    [{"role": "user", "content": "Ürün: kırmızı renkli şık bir çanta"}],
    [{"role": "system", "content": "Kısa cevap ver."}, {"role": "user", "content": "Çay mı kahve mi?"}],
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


def _open(path: Path, n_ctx: int, lora: Path | None = None):
    """llama.cpp on ``path`` (+ a LoRA GGUF), logits at every position, f32 KV cache."""
    from llama_cpp import Llama

    return Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, type_k=GGML_TYPE_F32,
                 type_v=GGML_TYPE_F32, n_threads=max(1, min(8, os.cpu_count() or 1)),
                 lora_path=str(lora) if lora is not None else None)


def check_gguf(path: Path, gguf_type: str, references: list[Reference], lora: Path | None = None) -> dict:
    """Generate with the GGUF file in llama.cpp and compare with the HF references (see the module doc).

    Returns:
        The measurements for the manifest: continuation tokens that agree, max logit difference,
        top-1 agreement and the tolerances applied.

    Args:
        lora: a LoRA GGUF llama.cpp applies on top of ``path`` (the references are then the merged model's).

    Raises:
        VerificationError: a check fails.
    """
    longest = max(len(r.prompt) + len(r.continuation) for r in references)
    llm = _open(path, longest + 8, lora)
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
            if same < len(got) and gguf_type in NEAR_TIE:
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
    if gguf_type in MIN_TOP1 and top1 < MIN_TOP1[gguf_type]:
        raise VerificationError(f"{path.name}: llama.cpp picks the HF model's top token on only {top1:.0%} of "
                                f"positions (< {MIN_TOP1[gguf_type]:.0%}); the GGUF file is wrong")
    tolerance = {"near_tie": NEAR_TIE[gguf_type]} if gguf_type in NEAR_TIE else {"min_top1": MIN_TOP1[gguf_type]}
    if gguf_type == "f32":
        tolerance["f32_logits"] = F32_LOGIT_TOLERANCE
    return {"continuation_tokens_matched": matched, "continuation_tokens": CONTINUATION_TOKENS,
            "max_logit_diff_relative": worst, "top1_agreement": top1, "positions": positions,
            "tolerances": tolerance}


def check_lora(base: Path, lora: Path, merged: Path, gguf_type: str, tokenizer) -> dict:
    """Base GGUF + LoRA GGUF in llama.cpp against the merged GGUF: greedy continuations of :data:`LORA_PROMPTS`.

    Float types must give the same tokens (a difference is tolerated only where the merged
    file's two candidates are within ``NEAR_TIE``); quantised types (the adapter is applied
    to quantised base weights, the merge was quantised after adding it) must agree on the
    top token at ``MIN_TOP1`` of the positions.

    Raises:
        VerificationError: the adapter does not reproduce the merged model.
    """
    prompts = [tokenizer(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for m in LORA_PROMPTS]
    n_ctx = max(len(p) for p in prompts) + CONTINUATION_TOKENS + 8
    runs = {}
    for key, path, adapter in (("merged", merged, None), ("lora", base, lora)):
        llm = _open(path, n_ctx, adapter)
        try:
            runs[key] = [_greedy(llm, ids, CONTINUATION_TOKENS) for ids in prompts]
        finally:
            llm.close()
    matched, agree, positions = [], 0, 0
    for ids, (want, want_scores), (got, got_scores) in zip(prompts, runs["merged"], runs["lora"], strict=True):
        same = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), len(got))
        matched.append(same)
        seen = len(ids) + same
        agree += int((got_scores[:seen].argmax(-1) == want_scores[:seen].argmax(-1)).sum())
        positions += seen
        if same < len(got) and gguf_type in NEAR_TIE:
            at, scale = len(ids) + same - 1, _scale(want_scores)
            margin = float(want_scores[at, want[same]] - want_scores[at, got[same]]) / scale
            if margin > NEAR_TIE[gguf_type]:
                raise VerificationError(
                    f"{lora.name} on {base.name}: llama.cpp's greedy continuation leaves the merged model's after "
                    f"{same} of {len(got)} tokens (margin {margin:.3g} > {NEAR_TIE[gguf_type]}); the adapter GGUF is wrong")
    top1 = agree / positions
    if gguf_type in MIN_TOP1 and top1 < MIN_TOP1[gguf_type]:
        raise VerificationError(f"{lora.name} on {base.name}: top token agrees with the merged GGUF on only "
                                f"{top1:.0%} of positions (< {MIN_TOP1[gguf_type]:.0%})")
    return {"prompts": len(prompts), "continuation_tokens_matched": matched,
            "continuation_tokens": CONTINUATION_TOKENS, "top1_agreement_with_merged": top1,
            "identical": all(m == CONTINUATION_TOKENS for m in matched)}


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
