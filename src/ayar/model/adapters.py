"""Adapters (LoRA, rsLoRA, DoRA) through peft, or full fine-tuning."""

from __future__ import annotations

from ayar.recipe import AdapterSection


def attach_adapter(model, cfg: AdapterSection):
    """Make ``model`` trainable as the recipe's ``adapter`` section says.

    LoRA (Hu et al. 2021) learns ``W + (alpha/r) B A``; rsLoRA (Kalajdzievski 2023)
    scales by ``alpha/sqrt(r)``; DoRA (Liu et al. 2024) also learns a per-column
    magnitude. ``full`` trains every parameter.

    Returns:
        A ``PeftModel`` for adapters, or the model itself for full fine-tuning.
    """
    if cfg.type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        use_rslora=cfg.rslora,
        use_dora=cfg.type == "dora",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
