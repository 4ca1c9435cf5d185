"""Generation with a base model, base + adapter, or a finished run.

Prompts are rendered with the chat template (the generation prompt appended),
tokenised without adding special tokens again, left-padded into batches, and
decoded until every sequence has produced an end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ayar.chat.templates import end_of_turn_ids
from ayar.errors import AyarError


def resolve_target(target: str) -> tuple[str, str | None, str]:
    """Work out what ``target`` names: (base model path, adapter folder or None, base quantization).

    ``target`` may be a run folder written by ``ayar train`` (its ``adapter/`` or
    ``model/``), a PEFT adapter folder, or a model folder / hub id.
    """
    path = Path(target)
    if (path / "recipe.yaml").is_file():
        from ayar.recipe import load_recipe

        recipe = load_recipe(path / "recipe.yaml")
        if (path / "adapter").is_dir():
            return recipe.model.path, str(path / "adapter"), recipe.model.quantization
        if (path / "model").is_dir():
            return str(path / "model"), None, "none"
        raise AyarError(f"{path}: run folder without adapter/ or model/; did training finish?")
    if (path / "adapter_config.json").is_file():
        import json

        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        return base, str(path), "none"
    return target, None, "none"


def merged_init_adapter(target: str) -> str | None:
    """The adapter a run merged into its base before training (``model.init_adapter``, mode merge), if any.

    Such a run's own adapter only makes sense on top of that merged base.
    """
    recipe_path = Path(target) / "recipe.yaml"
    if not recipe_path.is_file():
        return None
    from ayar.recipe import load_recipe
    from ayar.train.reference import adapter_folder

    m = load_recipe(recipe_path).model
    if m.init_adapter and m.init_adapter_mode == "merge":
        return str(adapter_folder(m.init_adapter))
    return None


def load_for_inference(target: str, *, dtype: str = "auto", chat_template: str | None = None):
    """Load (model, tokenizer) ready to generate, in eval mode.

    With an adapter, the tokenizer is the one saved beside it (it carries the
    chat template used in training).
    """
    from ayar.model.load import DTYPES, bf16_supported, load_model, load_tokenizer

    base, adapter, quantization = resolve_target(target)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = DTYPES.get(dtype) or (torch.bfloat16 if bf16_supported(device) else torch.float32)
    tokenizer = load_tokenizer(adapter or base, chat_template=chat_template)
    model = load_model(base, dtype=torch_dtype, device=device, quantization=quantization)
    if adapter:
        from peft import PeftModel

        init = merged_init_adapter(target)
        if init:  # a run that started from an earlier run's adapter, merged into the base before training
            model = PeftModel.from_pretrained(model, init).merge_and_unload()
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    stop: Sequence[str] = (),
) -> list[str]:
    """Complete each conversation with one assistant turn.

    Args:
        conversations: message lists ending with a user turn.
        temperature: 0 for greedy decoding, else sampling with ``top_p``.
        seed: seeds sampling, so sampled outputs are reproducible.
        stop: strings that end a reply: generation stops once every reply holds one, and each reply is
            cut before its first.

    Returns:
        The generated replies, decoded without special tokens.
    """
    stops = end_of_turn_ids(tokenizer)
    device = next(model.parameters()).device
    replies: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start : start + batch_size]
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed + start)
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
                "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}),
                **sampling,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            replies.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return [cut_at_stop(r.lstrip(), stop).strip() for r in replies]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest of the ``stop`` strings it contains."""
    ends = [i for i in (text.find(s) for s in stop if s) if i != -1]
    return text[: min(ends)] if ends else text
