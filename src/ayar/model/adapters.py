"""Adapters (LoRA, rsLoRA, DoRA) through peft, or full fine-tuning."""

from __future__ import annotations

from ayar.recipe import AdapterSection


def attach_adapter(model, cfg: AdapterSection, tokenizer=None):
    """Make ``model`` trainable as the recipe's ``adapter`` section says.

    LoRA (Hu et al. 2021) learns ``W + (alpha/r) B A``; rsLoRA (Kalajdzievski 2023)
    scales by ``alpha/sqrt(r)``; DoRA (Liu et al. 2024) also learns a per-column
    magnitude. ``full`` trains every parameter. ``train_embeddings`` adds trainable
    embedding rows (peft's trainable tokens: a delta on the chosen rows only, saved
    in the adapter and folded in by a merge); on an untied model the output rows of
    the same tokens are trained too. ``tokenizer`` (with its chat template) is needed for
    ``train_embeddings: format``.

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
        trainable_token_indices=trainable_rows(model, cfg.train_embeddings, tokenizer),
    )
    return get_peft_model(model, config)


def trainable_rows(model, which: str, tokenizer=None) -> dict[str, list[int]] | None:
    """``trainable_token_indices`` for peft: embedding module name -> the row ids to train.

    Args:
        model: the base model; for ``new`` it must have been loaded from a folder written by
            ``ayar tokenizer extend`` (the new ids are read from there).
        which: ``none``, ``new``, ``format`` (the chat format's special tokens,
            :func:`~ayar.chat.templates.format_token_ids` of ``tokenizer``) or ``all``.

    Raises:
        AyarError: ``new`` on a model that was not extended; ``format`` without a tokenizer.
    """
    if which == "none":
        return None
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if which == "new":
        from ayar.tokenizer.extend import new_token_ids

        ids = new_token_ids(model.name_or_path)
    elif which == "format":
        from ayar.chat.templates import format_token_ids
        from ayar.errors import AyarError

        if tokenizer is None:
            raise AyarError("adapter.train_embeddings: format needs the tokenizer and its chat template")
        ids = format_token_ids(tokenizer)
    else:
        ids = list(range(inp.weight.shape[0]))
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    rows = {names[inp]: ids}
    if out is not None and out.weight.data_ptr() != inp.weight.data_ptr():  # untied: train the output rows too
        rows[names[out]] = ids
    return rows


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
