"""A finished run folder, and the one loader that turns it (or any model target) into an inference model.

A run folder written by ``ayar train`` holds ``recipe.yaml`` (resolved), the
weights (``adapter/``: a PEFT adapter, or ``model/``: a full fine-tune, each with
the tokenizer and chat template the run trained with), ``summary.json``,
``run_manifest.json``, and later ``eval/`` and ``exports.jsonl``. The weights of
an adapter run only make sense on the model it trained on: ``model.path`` with
``model.init_adapter`` merged in when the run started from an earlier run's
adapter (``init_adapter_mode: merge``, e.g. DPO after SFT). :class:`RunFolder`
knows all of this; :func:`load_for_inference` builds the model from it, and
:func:`starting_model` the model the run started from. Every command that uses
a finished run (eval, export, serve, generate, chat, the preference reference)
goes through here.

A *target* is what ``ayar generate`` accepts: a run folder, a PEFT adapter
folder (its base read from ``adapter_config.json``), or a model folder / hub id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ayar.errors import AyarError
from ayar.govern.manifest import MANIFEST_NAME
from ayar.recipe import Recipe, load_recipe

if TYPE_CHECKING:  # torch loads with the first model, not with this module
    import torch

RECIPE_FILE = "recipe.yaml"
DATA_MANIFEST = "manifest.json"  # written by `ayar prepare` beside train.jsonl
InitMode = Literal["merge", "continue"]


def adapter_folder(target: str | Path) -> Path:
    """The PEFT adapter folder ``target`` names: the folder itself, or a run folder's ``adapter/``.

    Raises:
        AyarError: neither (an unfinished run, or a full fine-tune, which has no adapter).
    """
    path = Path(target)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise AyarError(f"model.init_adapter: {target} is neither a PEFT adapter folder nor a run folder with "
                    "adapter/ (did that run finish? full fine-tunes are used as model.path instead)")


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-`` (``model`` if empty)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return cleaned or "model"


def is_run_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a run's ``recipe.yaml``."""
    return (Path(path) / RECIPE_FILE).is_file()


def unfinished(run: Path) -> AyarError:
    return AyarError(f"{run}: no adapter/ or model/ folder; did training finish? (run `ayar train` again to "
                     "resume)")


@dataclass(frozen=True)
class RunFolder:
    """A finished ``ayar train`` run.

    Attributes:
        run_dir: the run folder.
        recipe: its resolved ``recipe.yaml``, read once.
        kind: ``lora``, ``dora`` or ``full``; None when training has not finished (only with
            ``RunFolder.open(..., finished=False)``).
        weights_dir: ``adapter/`` (PEFT adapter) or ``model/`` (full fine-tune); both hold
            the tokenizer and chat template the run trained with. None with ``kind``.
        lora_rank: the adapter's rank (None for a full fine-tune).
    """

    run_dir: Path
    recipe: Recipe
    kind: str | None
    weights_dir: Path | None
    lora_rank: int | None = None

    @classmethod
    def open(cls, run_dir: str | Path, *, finished: bool = True) -> RunFolder:
        """Read the run folder ``run_dir``.

        Args:
            finished: require the trained weights (off: a run whose recipe is enough, e.g. one
                evaluated through endpoints only).

        Raises:
            AyarError: not a run folder (no ``recipe.yaml``), or (with ``finished``) training has
                not finished (neither ``adapter/`` nor ``model/``).
            RecipeError: the saved recipe no longer validates.
        """
        run = Path(run_dir)
        if not is_run_folder(run):
            raise AyarError(f"{run}: not a run folder (no recipe.yaml); pass the output_dir of `ayar train`")
        recipe = load_recipe(run / RECIPE_FILE)
        adapter, model = run / "adapter", run / "model"
        if (adapter / "adapter_config.json").is_file():
            config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
            kind = "dora" if config.get("use_dora") else "lora"
            return cls(run, recipe, kind, adapter, lora_rank=int(config["r"]))
        if (model / "config.json").is_file():
            return cls(run, recipe, "full", model)
        if not finished:
            return cls(run, recipe, None, None)
        raise unfinished(run)

    @property
    def base(self) -> str:
        """Hub id or local folder of the base model (``model.path``)."""
        return self.recipe.model.path

    @property
    def base_revision(self) -> str | None:
        return self.recipe.model.revision

    @property
    def quantization(self) -> str:
        """How the frozen base was loaded in training (``none``, ``nf4``, ``int8``)."""
        return self.recipe.model.quantization

    @property
    def is_adapter(self) -> bool:
        return self.kind in ("lora", "dora")

    @property
    def name(self) -> str:
        """The run folder's name, made safe for file names and model names (``[A-Za-z0-9._-]``)."""
        return safe_name(self.run_dir.resolve().name)

    @property
    def init_adapter(self) -> Path | None:
        """The earlier adapter the run started from (``model.init_adapter``), if any."""
        m = self.recipe.model
        return adapter_folder(m.init_adapter) if m.init_adapter else None

    @property
    def init_mode(self) -> InitMode:
        return self.recipe.model.init_adapter_mode

    @property
    def merged_init_adapter(self) -> Path | None:
        """The adapter merged into the base before training (mode ``merge``): this run's own
        adapter only reproduces the run on top of it. None without one, or in mode ``continue``
        (the run's adapter then *is* the continued init adapter)."""
        return self.init_adapter if self.init_mode == "merge" else None

    @property
    def run_manifest(self) -> Path:
        """``run_manifest.json``: inputs, base model, outputs by content hash (:mod:`ayar.govern.manifest`)."""
        return self.run_dir / MANIFEST_NAME

    @property
    def data_manifest(self) -> Path:
        """The ``manifest.json`` of ``ayar prepare`` beside the training file (it may not exist)."""
        return Path(self.recipe.data.train).with_name(DATA_MANIFEST)

    @property
    def summary(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def exports_log(self) -> Path:
        return self.run_dir / "exports.jsonl"


@dataclass(frozen=True)
class ModelSpec:
    """What to load for a target.

    Attributes:
        base: model folder or hub id that is loaded first (a full fine-tune's ``model/``).
        revision: hub revision of ``base``.
        quantization: how ``base`` is loaded (a run loads it as it trained).
        init_adapter: an adapter merged into ``base`` before ``adapter`` goes on.
        adapter: the PEFT adapter folder under test, or None.
        tokenizer: the folder whose tokenizer (and chat template) goes with the model.
        trust_remote_code: the recipe's setting (off for anything that is not a run).
        run: the run folder, when the target is one.
    """

    base: str
    revision: str | None = None
    quantization: str = "none"
    init_adapter: Path | None = None
    adapter: Path | None = None
    tokenizer: str = ""
    trust_remote_code: bool = False
    run: RunFolder | None = None


def model_spec(target: str | Path | RunFolder) -> ModelSpec:
    """Work out what ``target`` names (see the module docstring).

    Raises:
        AyarError: a run folder that did not finish, or an adapter folder with a broken config.
    """
    if isinstance(target, RunFolder) or is_run_folder(target):
        run = target if isinstance(target, RunFolder) else RunFolder.open(target)
        m = run.recipe.model
        if run.weights_dir is None:
            raise unfinished(run.run_dir)
        if not run.is_adapter:
            return ModelSpec(str(run.weights_dir), tokenizer=str(run.weights_dir),
                             trust_remote_code=m.trust_remote_code, run=run)
        return ModelSpec(run.base, run.base_revision, run.quantization, run.merged_init_adapter, run.weights_dir,
                         str(run.weights_dir), m.trust_remote_code, run)
    path = Path(target)
    if (path / "adapter_config.json").is_file():
        try:
            base = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        except (ValueError, KeyError) as exc:
            raise AyarError(f"{path / 'adapter_config.json'}: cannot read the base model from it ({exc})") from None
        return ModelSpec(base, adapter=path, tokenizer=str(path))
    return ModelSpec(str(target), tokenizer=str(target))


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def weight_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` (bf16 where the device computes it natively, else fp32), a name, or a dtype as it is."""
    import torch

    from ayar.model.load import resolve_dtype

    return dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)


def attach_init_adapter(model, folder: str | Path, mode: InitMode, *, trainable: bool = False):
    """Put an earlier adapter on ``model``: merged into its weights (``merge``) or attached (``continue``).

    Args:
        trainable: in mode ``continue``, whether the adapter trains further (training) or is frozen.

    Returns:
        A plain model (merge) or a ``PeftModel`` (continue).
    """
    from peft import PeftModel

    if mode == "continue":
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def load_base(spec: ModelSpec, *, dtype: str | torch.dtype = "auto", device: torch.device | None = None,
              quantize: bool = True):
    """The model ``spec.adapter`` goes on: ``spec.base`` with ``spec.init_adapter`` merged in, in eval mode.

    Args:
        dtype: weight dtype (``auto``, ``bf16``, ``fp16``, ``fp32`` or a torch dtype).
        device: where the weights go; default CUDA when available, else the CPU.
        quantize: load a quantised run's base as it trained (off: unquantised, e.g. to merge).
    """
    from ayar.model.load import load_model

    device = device or default_device()
    model = load_model(spec.base, dtype=weight_dtype(dtype, device), revision=spec.revision,
                       trust_remote_code=spec.trust_remote_code, device=device,
                       quantization=spec.quantization if quantize else "none")
    if spec.init_adapter is not None:  # the run's adapter was trained on the base with this one merged in
        model = attach_init_adapter(model, spec.init_adapter, "merge")
    return model.eval()


def load_for_inference(target: str | Path | RunFolder | ModelSpec, *, dtype: str | torch.dtype = "auto",
                       chat_template: str | None = None, device: torch.device | None = None, quantize: bool = True,
                       with_adapter: bool = True):
    """Load ``(model, tokenizer)`` ready to generate or score, in eval mode.

    The tokenizer is the one beside the weights (a run's carries the chat template it
    trained with), loaded as the tokenizer class of the base model's config: an adapter
    folder has no ``config.json``, and transformers picks some tokenizer classes by model
    type, so this makes it behave as in training (and as beside merged weights).

    Args:
        target: a run folder, adapter folder, model folder or hub id (or their :class:`ModelSpec`).
        dtype: weight dtype; ``auto``: bf16 where the device computes it natively, else fp32.
        chat_template: a bundled template name or .jinja file replacing the tokenizer's own.
        device: default CUDA when available, else the CPU.
        quantize: load a quantised (QLoRA) run's base quantised, as it trained.
        with_adapter: attach the adapter (off: the model it goes on, e.g. for a server that
            hosts adapters by name).

    Returns:
        ``(model, tokenizer)``: a ``PeftModel`` (base + unmerged adapter) for an adapter
        target, else the plain model.

    Raises:
        AyarError: a target that cannot be found or loaded.
    """
    from ayar.model.load import load_tokenizer

    spec = target if isinstance(target, ModelSpec) else model_spec(target)
    # The tokenizer first: a missing chat template fails before any weights load.
    tokenizer = load_tokenizer(spec.tokenizer, chat_template=chat_template, config=_base_config(spec),
                               trust_remote_code=spec.trust_remote_code)
    model = load_base(spec, dtype=dtype, device=device, quantize=quantize)
    if spec.adapter is not None and with_adapter:
        from peft import PeftModel

        model = merge_trainable_tokens(PeftModel.from_pretrained(model, str(spec.adapter)).eval())
    return model, tokenizer


def merge_trainable_tokens(model):
    """Write an adapter's trained token rows (``train_embeddings``) into the embedding weight, in place.

    Unmerged, peft rebuilds the whole (vocabulary x hidden) weight with the rows
    replaced at every forward (twice with a tied head): on Gemma's 262k vocabulary
    that copy, not the model, dominated each decoding step. Merged, the forward is
    the plain embedding and head with the same numbers; LoRA layers stay unmerged,
    and disabling the adapter still restores the original rows (peft unmerges them).
    """
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and not module.merged:
            module.merge()
    return model


def _base_config(spec: ModelSpec):
    """The base model's config when the tokenizer lies in a folder without one (an adapter), else None.

    Raises:
        AyarError: the base cannot be found or its config read.
    """
    if spec.tokenizer == spec.base:
        return None
    from transformers import AutoConfig

    from ayar.model.load import check_source

    check_source(spec.base)
    try:
        return AutoConfig.from_pretrained(spec.base, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AyarError(f"{spec.base}: cannot read the base model's config.json ({first})") from None


def starting_model(run: RunFolder, *, dtype: str | torch.dtype = "fp32", device: torch.device | None = None):
    """The model ``run`` started from, in eval mode: ``model.path`` with ``model.init_adapter`` merged in
    (mode merge) or attached (mode continue), as training built it before its own weights changed."""
    from ayar.model.load import load_model

    device = device or default_device()
    m = run.recipe.model
    model = load_model(m.path, dtype=weight_dtype(dtype, device), revision=m.revision,
                       trust_remote_code=m.trust_remote_code, device=device)
    if run.init_adapter is not None:
        model = attach_init_adapter(model, run.init_adapter, run.init_mode)
    return model.eval()
