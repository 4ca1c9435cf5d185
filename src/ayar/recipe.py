"""The recipe: one YAML file that describes a run.

The schema is a tree of pydantic models. Loading a recipe reports every
problem at once, each with its YAML path and line (``recipe.yaml:12
adapter.r: must be > 0, got 0``); unknown keys are rejected with a "did you
mean". Each field is documented once, in its ``description``, and that text
becomes the comments of ``ayar init`` and the README's recipe reference.

Relative paths in a recipe are resolved against the recipe file's folder, so
a recipe and its data can be moved together.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ayar.data.prepare_config import PrepareSection
from ayar.errors import RecipeError
from ayar.eval.config import EvalSection
from ayar.govern.config import GateSection, GovernanceSection
from ayar.section import Section
from ayar.synth.config import SynthSection

# The training methods (ayar.train.methods implements each; a test keeps the two in step) and those that
# need a reference model. Kept here as data so that loading a recipe imports no training code.
METHOD_NAMES = ("pretrain", "sft", "dpo", "orpo", "cpo", "simpo", "kto", "distill")
REFERENCE_METHODS = ("dpo", "kto")


class ModelSection(Section):
    path: str = Field(description="Hugging Face hub id or local folder of the base model.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Weight dtype. auto: bf16 for adapter training where the hardware supports it, else fp32.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to load.")
    quantization: Literal["none", "nf4", "int8"] = Field(
        "none",
        description="Load the frozen base quantised with bitsandbytes: nf4 (4-bit NormalFloat with double "
        "quantisation: QLoRA) or int8. Needs an adapter; layer sizes must be multiples of 64 on CPU.",
    )
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped with the model. Leave off unless you trust its source."
    )
    chat_template: str | None = Field(
        None,
        description="Bundled template (chatml, llama3, mistral, qwen2.5, gemma) or a .jinja file; "
        "null uses the tokenizer's own.",
    )
    init_adapter: str | None = Field(
        None,
        description="Start from the adapter of an earlier run (its run folder or a PEFT adapter folder), e.g. "
        "DPO after SFT.",
    )
    init_adapter_mode: Literal["merge", "continue"] = Field(
        "merge",
        description="merge: fold init_adapter into the base weights and train a fresh adapter on top (the "
        "reference is the merged model); continue: keep training init_adapter itself (the reference must then "
        "be precomputed).",
    )


class DataSection(Section):
    train: str = Field(description="Training file: JSONL with `messages` (sft) or `text` (pretrain), or .txt.")
    val: str | None = Field(None, description="Validation file in the same format; null for none.")
    text_field: str = Field("text", description="Field holding raw text for pretrain JSONL files.")
    max_length: int = Field(1024, gt=0, description="Longest tokenised example; longer ones are truncated.")
    loss_on: Literal["assistant", "last_assistant", "all"] = Field(
        "assistant",
        description="Which tokens are trained on: every assistant turn (default), only the last one, or all.",
    )
    packing: bool = Field(
        False,
        description="Pack several examples into each max_length row, without attention between them "
        "(position ids restart per example).",
    )


class AdapterSection(Section):
    type: Literal["lora", "dora", "full"] = Field(
        "lora", description="lora, dora (weight-decomposed LoRA), or full fine-tuning."
    )
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: float = Field(32.0, gt=0, description="LoRA scaling numerator: the update is scaled by alpha/r.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="Layers that get adapters: all-linear, or a list such as [q_proj, v_proj]."
    )
    train_embeddings: Literal["none", "new", "format", "all"] = Field(
        "none",
        description="Also train embedding rows, saved with the adapter: new: only the tokens `ayar tokenizer "
        "extend` added to model.path; format: the special tokens the chat template writes (turn markers, end of "
        "turn), which a base model never learned, so it cannot end its replies without them; all: every row. "
        "Input and output rows both (one matrix when tied).",
    )

    @model_validator(mode="after")
    def _embeddings_need_adapter(self) -> AdapterSection:
        if self.train_embeddings != "none" and self.type == "full":
            raise ValueError("adapter.train_embeddings is for lora and dora; full fine-tuning trains every "
                             "embedding already")
        return self


class PreferenceSection(Section):
    reference: Literal["auto", "adapter_disabled", "copy", "precompute"] = Field(
        "auto",
        description="Reference model for dpo and kto. adapter_disabled: the same weights with the adapter "
        "switched off (no second copy); copy: a frozen copy (full fine-tuning); precompute: one pass before "
        "training caches reference log-probs on disk, training runs no reference forward. auto: "
        "adapter_disabled with an adapter, copy for full fine-tuning, precompute when continuing an adapter.",
    )
    reference_device: str | None = Field(
        None, description="Device for a copied reference (e.g. cuda:1); null: the training device."
    )
    reference_quantization: Literal["none", "nf4", "int8"] = Field(
        "none", description="Load a copied reference quantised with bitsandbytes to save memory."
    )
    max_prompt_length: int | None = Field(
        None, gt=0,
        description="Longer prompts keep their last max_prompt_length tokens; completions are then cut so "
        "prompt + completion fits data.max_length (the same cut for chosen and rejected).",
    )
    bad_pairs: Literal["drop", "error"] = Field(
        "drop",
        description="Pairs with identical chosen and rejected, an empty completion, or a prompt with no room "
        "left for a completion: drop them (counted and reported) or stop with an error.",
    )
    cache_dir: str | None = Field(
        None, description="Where precomputed reference log-probs are cached; null: $AYAR_CACHE_DIR or "
        "~/.cache/ayar."
    )


class DpoSection(Section):
    loss: Literal["sigmoid", "robust", "hinge", "ipo"] = Field(
        "sigmoid",
        description="sigmoid (DPO, with label_smoothing: cDPO), robust (robust DPO), hinge (SLiC), ipo (IPO).",
    )
    beta: float = Field(0.1, gt=0, description="Inverse temperature: how far the policy may move from the "
                        "reference (IPO: the regularisation tau).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed share of flipped preference labels "
                                   "(sigmoid and robust).")
    nll_weight: float = Field(0.0, ge=0, description="Weight of an added NLL term on the chosen replies (mean "
                              "over their tokens; RPO, Pang et al. 2024). It keeps the chosen replies likely while "
                              "the margin grows, which limits drift from the reference.")


class OrpoSection(Section):
    beta: float = Field(0.1, gt=0, description="Weight of the odds-ratio term (the paper's lambda).")
    nll_weight: float = Field(1.0, ge=0, description="Weight of the chosen reply's NLL (SFT) term.")


class CpoSection(Section):
    beta: float = Field(0.1, gt=0, description="Inverse temperature of the reference-free preference term.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed share of flipped labels.")
    nll_weight: float = Field(1.0, ge=0, description="Weight of the chosen reply's NLL term (the paper's BC "
                              "regulariser).")


class SimpoSection(Section):
    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised rewards.")
    gamma: float = Field(0.5, ge=0, description="Target reward margin.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Assumed share of flipped labels.")
    nll_weight: float = Field(0.0, ge=0, description="Weight of an added chosen-reply NLL term (0: pure SimPO).")


class KtoSection(Section):
    beta: float = Field(0.1, gt=0, description="Inverse temperature.")
    desirable_weight: float = Field(1.0, gt=0, description="Loss weight of desirable examples (lambda_D).")
    undesirable_weight: float = Field(1.0, gt=0, description="Loss weight of undesirable examples (lambda_U); "
                                      "raise it when undesirable examples are scarce.")


class DistillSection(Section):
    teacher: str = Field(description="The teacher: a model folder, or a finished run folder (base + adapter), on "
                         "this machine and sharing the student's tokenizer.")
    temperature: float = Field(1.0, gt=0, le=20, description="Softens both distributions (softmax(z / T)); the KL "
                               "term is scaled by T^2.")
    kl_weight: float = Field(1.0, ge=0, description="Weight of the forward KL(teacher || student) term.")
    sft_weight: float = Field(0.0, ge=0, description="Weight of the usual SFT cross-entropy on the data's tokens "
                              "(0: pure distillation).")
    teacher_logprobs: Literal["on_the_fly", "precompute"] = Field(
        "on_the_fly", description="on_the_fly: the teacher stays loaded and runs forward on every batch (exact "
        "KL over the whole vocabulary); precompute: one pass before training stores the teacher's top_k "
        "log-probs per target token on disk (safetensors), the teacher is freed, and training runs no teacher "
        "forward (KL over the top_k tokens plus one bucket for the rest of the mass).")
    top_k: int = Field(64, ge=1, description="precompute: teacher tokens kept per target position (disk and RAM: "
                       "8 x top_k + 4 bytes per target token); more than the vocabulary means all of it (exact).")
    cache_dir: str | None = Field(None, description="precompute: where the teacher's top-k log-probs are cached, "
                                  "keyed by teacher weights, data, max_length, temperature and top_k; null: "
                                  "$AYAR_CACHE_DIR or ~/.cache/ayar.")

    @model_validator(mode="after")
    def _settings_agree(self) -> DistillSection:
        problems = []
        if self.kl_weight == 0 and self.sft_weight == 0:
            problems.append("kl_weight and sft_weight are both 0: nothing would be learned")
        if self.teacher_logprobs == "on_the_fly":  # by value: a dumped recipe holds every default
            changed = {"top_k": self.top_k != DistillSection.model_fields["top_k"].default,
                       "cache_dir": self.cache_dir is not None}
            problems += [f"{name} applies to teacher_logprobs: precompute; remove it or set that"
                         for name, is_set in changed.items() if is_set]
        if problems:
            raise ValueError("; ".join(problems))
        return self


METHOD_SECTIONS: dict[str, type[Section]] = {
    "dpo": DpoSection, "orpo": OrpoSection, "cpo": CpoSection, "simpo": SimpoSection, "kto": KtoSection,
    "distill": DistillSection,
}


class TrainSection(Section):
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of AdamW.")
    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps to run; overrides epochs.")
    micro_batch_size: int = Field(4, gt=0, description="Examples per forward pass.")
    gradient_accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this; null: no clipping.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Autocast precision. auto: bf16 where the hardware supports it, else fp32."
    )
    seed: int = Field(42, description="Seed for weights of new layers, data order and dropout.")
    eval_every: int | None = Field(None, gt=0, description="Validation loss every N steps (and at the end).")
    log_every: int = Field(10, gt=0, description="Write a metrics line every N steps.")
    group_by_length: bool = Field(
        False, description="Batch examples of similar length together (less padding); batch order stays shuffled."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: less memory, about 30% more compute."
    )
    loss_chunk_size: int | None = Field(
        None, gt=0, description="Target positions the output head scores at a time (forward and backward); its "
        "memory is one chunk of positions x vocabulary. null: about 8M logits on a CPU (262 positions of a 32k "
        "vocabulary), 32M on a GPU.")
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp", description="How several processes (torchrun, accelerate launch) share the model. ddp: each holds all "
        "of it and gradients are averaged; fsdp: parameters, gradients and optimizer state are sharded across "
        "processes, one unit per decoder layer (torch FSDP2), for models whose training state does not fit one "
        "device. Checkpoints and saved weights are whole either way. One process: no difference.")
    save_every: int | None = Field(
        500, gt=0, description="Write a checkpoint every N steps (also at the end and at each new best eval loss)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept: the last N, plus the best by eval loss.")
    max_bad_steps: int = Field(
        5, ge=1, description="Stop after this many consecutive steps with a non-finite loss or gradient norm."
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop when eval loss has not improved for N evaluations; null: never."
    )
    early_stopping_min_delta: float = Field(
        0.0, ge=0, description="Smallest eval-loss decrease that counts as an improvement."
    )
    tracking: Literal["none", "mlflow", "tensorboard", "wandb"] = Field(
        "mlflow", description="Experiment tracker. mlflow: a local SQLite store in the run folder (no server)."
    )

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v


class Recipe(Section):
    model: ModelSection = Field(description="The base model.")
    data: DataSection = Field(description="Training and validation data.")
    method: str = Field(
        "sft", description="Training method: pretrain, sft, dpo, orpo, kto, cpo, simpo or distill.")
    adapter: AdapterSection = Field(default_factory=AdapterSection, description="Adapter or full fine-tuning.")
    train: TrainSection = Field(default_factory=TrainSection, description="Optimisation hyper-parameters.")
    output_dir: str = Field("runs/ayar", description="Run folder: adapter, metrics.jsonl, resolved recipe.")
    prepare: PrepareSection | None = Field(
        None, description="Raw data -> redacted, deduplicated, split dataset folder (`ayar prepare`)."
    )
    preference: PreferenceSection = Field(
        default_factory=PreferenceSection, description="Reference model and pair handling for preference methods."
    )
    dpo: DpoSection | None = Field(None, description="DPO settings (method: dpo).")
    orpo: OrpoSection | None = Field(None, description="ORPO settings (method: orpo).")
    cpo: CpoSection | None = Field(None, description="CPO settings (method: cpo).")
    simpo: SimpoSection | None = Field(None, description="SimPO settings (method: simpo).")
    kto: KtoSection | None = Field(None, description="KTO settings (method: kto).")
    distill: DistillSection | None = Field(None, description="Logit distillation from a local teacher (method: "
                                           "distill; required then).")
    eval: EvalSection | None = Field(
        None, description="What `ayar eval RUN_DIR` measures: data, metrics, baseline, judge, forgetting and "
        "memorisation audits."
    )
    synth: SynthSection | None = Field(
        None, description="A teacher model writes, labels or rewrites data (`ayar synth`) or scores sampled "
        "replies into preference pairs (`ayar synth pairs`)."
    )
    governance: GovernanceSection = Field(
        default_factory=GovernanceSection, description="Purpose, legal basis, retention and the audit ledger "
        "(KVKK, EU AI Act documentation)."
    )
    gate: GateSection | None = Field(
        None, description="Release gate: conditions on the latest evaluation that `ayar export` and `ayar serve` "
        "enforce."
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHOD_NAMES:
            raise ValueError(f"unknown method {v!r}{_did_you_mean(v, METHOD_NAMES)}; available: "
                             f"{', '.join(METHOD_NAMES)}")
        return v

    @model_validator(mode="after")
    def _no_conflicts(self, info: ValidationInfo) -> Recipe:
        """Cross-field rules. :func:`validate_recipe` collects them (each with its line) through the
        validation context; a recipe built directly gets them all in one error."""
        found = self.conflicts()
        collect = (info.context or {}).get("conflicts") if info is not None else None
        if collect is not None:
            collect.extend(found)
        elif found:
            raise ValueError("; ".join(message for _, message in found))
        return self

    def conflicts(self) -> list[tuple[tuple[str, ...], str]]:
        """Every pair of settings that cannot go together, as (the key to point at, the message).

        These are all known from the recipe alone, so ``ayar check`` reports them before any
        weights load; :func:`file_problems` adds what needs the files the recipe names.
        """
        m, p, found = self.model, self.preference, []
        continuing = bool(m.init_adapter) and m.init_adapter_mode == "continue"
        full = self.adapter.type == "full"
        if m.quantization != "none" and full:
            found.append((("model", "quantization"), "model.quantization needs adapter.type lora or dora: quantised "
                          "weights cannot be fully fine-tuned"))
        for name in METHOD_SECTIONS:
            if getattr(self, name) is not None and name != self.method:
                found.append(((name,), f"section `{name}` is set but method is {self.method!r}; remove it or set "
                              f"method: {name}"))
        if self.train.distributed == "fsdp" and m.quantization != "none":
            found.append((("train", "distributed"), "train.distributed fsdp cannot shard quantised (bitsandbytes) "
                          "weights; use ddp for QLoRA, or model.quantization: none"))
        if self.train.distributed == "fsdp" and self.adapter.train_embeddings != "none":
            found.append((("train", "distributed"), "train.distributed fsdp is not supported with "
                          "adapter.train_embeddings; use ddp, or train_embeddings: none"))
        if continuing and full:
            found.append((("model", "init_adapter_mode"), "model.init_adapter_mode continue needs an adapter "
                          "(adapter.type lora or dora); use merge for full fine-tuning"))
        if m.init_adapter and m.init_adapter_mode == "merge" and m.quantization != "none":  # merge: the default
            found.append((("model", "init_adapter"), "model.init_adapter_mode merge cannot merge into a "
                          "quantised base; use init_adapter_mode: continue (with preference.reference: precompute) "
                          "or no quantization"))
        if continuing and p.reference == "adapter_disabled":
            found.append((("preference", "reference"), "preference.reference adapter_disabled would make the base "
                          "(not the init_adapter model) the reference when continuing an adapter; use precompute, "
                          "or model.init_adapter_mode merge"))
        if self.method in REFERENCE_METHODS and full and p.reference == "adapter_disabled":
            found.append((("preference", "reference"), "preference.reference adapter_disabled needs an adapter; with "
                          "adapter.type full use copy or precompute"))
        if self.method == "distill" and self.distill is None:
            found.append((("method",), "method distill needs a `distill:` section naming the teacher"))
        if self.dpo is not None and self.dpo.label_smoothing and self.dpo.loss in ("hinge", "ipo"):
            found.append((("dpo", "label_smoothing"), f"dpo.label_smoothing applies to the sigmoid and robust "
                          f"losses, not {self.dpo.loss}"))
        if p.reference_quantization != "none" and p.reference != "copy":
            found.append((("preference", "reference_quantization"), "preference.reference_quantization applies to "
                          "reference: copy only"))
        if p.reference_quantization != "none" and m.init_adapter:
            found.append((("preference", "reference_quantization"), "preference.reference_quantization loads the "
                          "reference from model.path and cannot include model.init_adapter; use precompute instead"))
        return found

    def method_config(self) -> Section | None:
        """The settings section of a preference method (its defaults when the recipe has none)."""
        if self.method not in METHOD_SECTIONS:
            return None
        return getattr(self, self.method) or METHOD_SECTIONS[self.method]()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                check_files: bool = False) -> Recipe:
    """Read, override and validate a recipe file.

    Args:
        path: the YAML file.
        overrides: ``dotted.key=value`` strings applied before validation; values
            are parsed as YAML (``1e-4`` becomes a number, ``[a, b]`` a list).
        check_files: also check the files the recipe names that decide whether it can run
            (:func:`file_problems`), as ``ayar check`` does.

    Returns:
        The validated recipe, with relative paths resolved against the file's folder.

    Raises:
        RecipeError: with every problem found, each with its YAML path and line.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(str(path), ["file not found; create one with `ayar init`"])
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise RecipeError(str(path), [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(str(path), ["the top level must be a mapping of sections (model:, data:, ...)"])
    apply_overrides(raw, overrides, str(path))
    return validate_recipe(raw, source=str(path), lines=lines, base_dir=path.parent, check_files=check_files)


def validate_recipe(raw: dict[str, Any], *, source: str = "<recipe>", lines: dict[tuple, int] | None = None,
                    base_dir: Path | None = None, check_files: bool = False) -> Recipe:
    """Validate a recipe held as a dict; see :func:`load_recipe`."""
    conflicts: list[tuple[tuple[str, ...], str]] = []
    try:
        recipe = Recipe.model_validate(raw, context={"conflicts": conflicts})
    except ValidationError as exc:
        raise RecipeError(source, [_describe(err, lines or {}) for err in exc.errors()]) from None
    if recipe.gate is not None:  # conditions the eval settings can never satisfy
        from ayar.govern.gates import static_problems

        problems = static_problems(recipe.gate.require, recipe.gate.metric, recipe.eval)
        if problems:
            raise RecipeError(source, [_describe({"loc": ("gate", "require", i), "type": "value_error", "msg": text},
                                                 lines or {}) for i, text in problems])
    if base_dir is not None:
        recipe = _resolve_paths(recipe, base_dir)
    if check_files:
        conflicts += file_problems(recipe)
    if conflicts:
        raise RecipeError(source, [_with_line(message, loc, lines or {}) for loc, message in conflicts])
    return recipe


def check_recipe_files(recipe: Recipe, source: str = "<recipe>") -> None:
    """Raise the :func:`file_problems` of ``recipe``, all at once.

    Raises:
        RecipeError: one line per problem.
    """
    problems = file_problems(recipe)
    if problems:
        raise RecipeError(source, [message for _, message in problems])


def file_problems(recipe: Recipe) -> list[tuple[tuple[str, ...], str]]:
    """What the files a (path-resolved) recipe names rule out, known before any weights load.

    ``model.init_adapter`` must be a PEFT adapter folder or a finished run folder with
    ``adapter/``, and that run must not itself have started from another adapter (its
    adapter only reproduces it on top of that one); a ``model.chat_template`` ending in
    ``.jinja`` must exist. Data files are not checked: ``ayar prepare`` may not have written
    them yet.

    Returns:
        (the key to point at, the message) per problem.
    """
    m, found = recipe.model, []
    if m.chat_template and m.chat_template.endswith(".jinja") and not Path(m.chat_template).is_file():
        found.append((("model", "chat_template"), f"model.chat_template: {m.chat_template} does not exist"))
    if m.init_adapter:
        folder = Path(m.init_adapter)
        adapter = folder if (folder / "adapter_config.json").is_file() else folder / "adapter"
        run_recipe = adapter.parent / "recipe.yaml"
        if not (adapter / "adapter_config.json").is_file():
            found.append((("model", "init_adapter"), f"model.init_adapter: {m.init_adapter} is neither a PEFT "
                          "adapter folder nor a run folder with adapter/ (did that run finish? full fine-tunes are "
                          "used as model.path instead)"))
        elif adapter.name == "adapter" and run_recipe.is_file():
            try:
                earlier = load_recipe(run_recipe).model.init_adapter
            except RecipeError as exc:
                earlier = None
                found.append((("model", "init_adapter"), f"model.init_adapter: that run's recipe does not load: "
                              f"{exc}"))
            if earlier:
                found.append((("model", "init_adapter"), f"model.init_adapter: {m.init_adapter} itself started "
                              "from another adapter; chains of init adapters are not supported. Export that run "
                              "with `ayar export RUN --format merged` and use the merged folder as model.path"))
    return found


def apply_overrides(raw: dict[str, Any], overrides, source: str, prefix: str = "") -> None:
    """Apply every ``--set key=value`` (keys without ``prefix`` get it), reporting all bad ones at once.

    Raises:
        RecipeError: one line per override that could not be applied.
    """
    problems = []
    for item in overrides:
        try:
            apply_override(raw, item if item.startswith(prefix) else prefix + item)
        except ValueError as exc:
            problems.append(f"--set {item}: {exc}")
    if problems:
        raise RecipeError(source, problems)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` to a nested dict in place (creating sections as needed)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError("expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ValueError(f"{part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    def resolve(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    data = recipe.data.model_copy(
        update={"train": resolve(recipe.data.train), "val": resolve(recipe.data.val) if recipe.data.val else None}
    )
    model = recipe.model
    local = base / model.path
    if model.path.startswith((".", "/", "~")) or local.exists():
        model = model.model_copy(update={"path": resolve(model.path)})
    if model.chat_template and model.chat_template.endswith(".jinja"):
        model = model.model_copy(update={"chat_template": resolve(model.chat_template)})
    if model.init_adapter:
        model = model.model_copy(update={"init_adapter": resolve(model.init_adapter)})
    preference = recipe.preference
    if preference.cache_dir:
        preference = preference.model_copy(update={"cache_dir": resolve(preference.cache_dir)})
    evaluation = recipe.eval.resolved(base) if recipe.eval else None
    distill = recipe.distill
    if distill is not None and (distill.teacher.startswith((".", "/", "~")) or (base / distill.teacher).exists()):
        distill = distill.model_copy(update={"teacher": resolve(distill.teacher)})
    if distill is not None and distill.cache_dir:
        distill = distill.model_copy(update={"cache_dir": resolve(distill.cache_dir)})
    governance = recipe.governance
    if governance.ledger:
        governance = governance.model_copy(update={"ledger": resolve(governance.ledger)})
    return recipe.model_copy(update={"data": data, "model": model, "output_dir": resolve(recipe.output_dir),
                                     "preference": preference, "eval": evaluation, "governance": governance,
                                     "distill": distill})


# ----------------------------------------------------------------------------- error text


def _describe(err: dict[str, Any], lines: dict[tuple, int]) -> str:
    return _with_line(_explain(err), tuple(str(p) for p in err["loc"]), lines)


def _with_line(text: str, loc: tuple[str, ...], lines: dict[tuple, int]) -> str:
    line = _line_of(loc, lines)
    return f"{text} (line {line})" if line else text


def _explain(err: dict[str, Any]) -> str:
    loc = tuple(str(p) for p in err["loc"])
    where = ".".join(loc) or "<top>"
    prefix = where
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        fields = _fields_at(loc[:-1])
        return f"{prefix}: unknown key{_did_you_mean(loc[-1], fields)}; allowed: {', '.join(fields)}"
    if kind == "missing":
        return f"{prefix}: required, but missing"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        bound = next(iter(ctx.values()))
        return f"{prefix}: must be {bounds[kind]} {bound}, got {value!r}"
    if kind == "literal_error":
        return f"{prefix}: must be one of {ctx.get('expected')}, got {value!r}"
    message = str(err["msg"])
    message = message.removeprefix("Value error, ")
    if kind == "value_error":
        return f"{prefix}: {message}"
    return f"{prefix}: {message[:1].lower() + message[1:]}, got {value!r}"


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for "did you mean")."""
    model: type[BaseModel] | None = Recipe
    for part in loc:
        if part.isdigit():  # an index into a list of sections
            continue
        field = model.model_fields.get(part)
        model = _section_type(getattr(field, "annotation", None))
        if model is None:
            return []
    return list(model.model_fields)


def _section_type(annotation) -> type[BaseModel] | None:
    """The section model inside ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        inner = _section_type(arg)
        if inner is not None:
            return inner
    return None


def _did_you_mean(word: str, choices) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _key_lines(text: str) -> dict[tuple, int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}

    def walk(node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[(*path, str(i))] = value.start_mark.line + 1
                walk(value, (*path, str(i)))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _line_of(loc: tuple[str, ...], lines: dict[tuple, int]) -> int | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
