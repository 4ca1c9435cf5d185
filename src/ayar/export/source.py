"""What a run folder holds for export: the base model, the adapter or full model, the tokenizer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ayar.errors import AyarError


@dataclass(frozen=True)
class RunSource:
    """A finished ``ayar train`` run, as export sees it.

    Attributes:
        run_dir: the run folder.
        base: hub id or local folder of the base model (``model.path`` of the recipe).
        base_revision: hub revision the run used, or None.
        kind: ``lora``, ``dora`` or ``full``.
        weights_dir: ``adapter/`` (PEFT adapter) or ``model/`` (full fine-tune); both hold
            the tokenizer and chat template the run trained with.
        lora_rank: the adapter's rank (None for a full fine-tune).
    """

    run_dir: Path
    base: str
    base_revision: str | None
    kind: str
    weights_dir: Path
    lora_rank: int | None = None

    @property
    def is_adapter(self) -> bool:
        return self.kind != "full"

    @property
    def name(self) -> str:
        """The run folder's name, made safe for file names and model names (``[A-Za-z0-9._-]``)."""
        return safe_name(self.run_dir.resolve().name)


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-`` (``model`` if empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "model"


def read_run(run_dir: str | Path) -> RunSource:
    """Describe the run folder ``run_dir`` for export.

    Raises:
        AyarError: not a run folder (no ``recipe.yaml``), or training has not finished
            (neither ``adapter/`` nor ``model/``).
    """
    from ayar.recipe import load_recipe

    run = Path(run_dir)
    if not (run / "recipe.yaml").is_file():
        raise AyarError(f"{run}: not a run folder (no recipe.yaml); pass the output_dir of `ayar train`")
    recipe = load_recipe(run / "recipe.yaml")
    adapter, model = run / "adapter", run / "model"
    if (adapter / "adapter_config.json").is_file():
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        kind = "dora" if config.get("use_dora") else "lora"
        return RunSource(run, recipe.model.path, recipe.model.revision, kind, adapter, lora_rank=int(config["r"]))
    if (model / "config.json").is_file():
        return RunSource(run, recipe.model.path, recipe.model.revision, "full", model)
    raise AyarError(f"{run}: no adapter/ or model/ folder; did training finish? (run `ayar train` again to resume)")
