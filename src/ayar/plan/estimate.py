"""The estimate of one recipe: parameters, data, memory per device, time, cost, and what fits.

:func:`plan_recipe` reads the model's config, tokenizer and safetensors
headers (never its weights) and the training files; :func:`estimate_device`
turns that into a memory breakdown and a time range for one device;
for ``method: distill`` the teacher is read the same way (:func:`read_teacher`) and
adds its weights and forward (on the fly) or a pass before training (precompute);
:func:`fit_row` tries the cheaper changes (gradient checkpointing, a smaller
micro-batch with more accumulation, QLoRA) when the recipe as written does not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ayar.errors import AyarError
from ayar.plan import compute, memory
from ayar.plan.catalogue import Calibration, Device, load_calibrations
from ayar.plan.data import DataProfile, Stream, profile_file, sample_texts, simulate
from ayar.plan.inventory import Inventory, adapter_parameters, read_inventory, trainable_parameters
from ayar.plan.tokenizer import TokenizerFit, tokenizer_fit

MAX_MICRO_BATCH = 512


@dataclass(frozen=True)
class TeacherPlan:
    """The distillation teacher: its sizes, and when it runs."""

    path: str
    inventory: Inventory
    adapter_params: int  # a run folder's adapter on the teacher (0: none)
    quantization: str  # how its base loads (a QLoRA run's teacher loads quantised)
    mode: str  # on_the_fly (resident, a forward every micro-batch) or precompute (one pass before training)
    top_k: int  # tokens stored per target position (precompute), at most the vocabulary

    def file_bytes(self, target_tokens: int) -> int:
        """The precomputed top-k file: int32 ids and fp32 log-probs per kept token, one fp32 rest per target."""
        return target_tokens * (8 * self.top_k + 4)


@dataclass
class Planned:
    """Model and data facts that do not depend on the device."""

    recipe: object
    inventory: Inventory
    trainable: int
    profile: DataProfile
    steps: int
    teacher: TeacherPlan | None = None
    tokenizer_fit: TokenizerFit | None = None  # the tokenizer on the training text (``ayar plan`` only)
    _streams: dict = field(default_factory=dict, repr=False)

    @property
    def teacher_file_bytes(self) -> int:
        """Disk (and RAM while training) of the precomputed top-k of the training split (0: none)."""
        t = self.teacher
        return t.file_bytes(self.profile.target_tokens) if t is not None and t.mode == "precompute" else 0

    def stream(self, micro_batch: int, accumulation: int) -> Stream:
        """The simulated micro-batches for a batch setting (cached: the fit table asks many times)."""
        key = (micro_batch, accumulation)
        if key not in self._streams:
            t = self.recipe.train
            self._streams[key] = simulate(self.profile, micro_batch, accumulation, self.steps, t.seed,
                                          t.group_by_length)
        return self._streams[key]


@dataclass
class DeviceEstimate:
    device: Device
    setup: memory.Setup
    terms: dict[str, float]
    seconds: tuple[float, float]  # (fast, slow)
    flops: float
    calibration: Calibration
    teacher_flops: float = 0.0  # included in flops
    precompute_peak: float = 0.0  # the teacher's precompute pass before training (0: none)

    @property
    def peak(self) -> float:
        return sum(self.terms.values())

    @property
    def fits(self) -> bool:
        return max(self.peak, self.precompute_peak) <= self.device.memory_bytes

    @property
    def cost(self) -> tuple[float, float] | None:
        p = self.device.price_per_hour
        return (self.seconds[0] / 3600 * p[0], self.seconds[1] / 3600 * p[1]) if p else None


@dataclass
class FitRow:
    device: Device
    status: str  # fits, fits with gradient checkpointing, fits with micro-batch N, fits with QLoRA, does not fit
    estimate: DeviceEstimate  # of the recipe as written
    chosen: DeviceEstimate | None  # of the cheapest change that fits (None: nothing fits)
    change: dict[str, object] = field(default_factory=dict)  # recipe keys the change sets
    max_micro_batch: int = 0  # largest micro-batch that fits with the chosen settings


def plan_recipe(recipe, *, tokenizer=None, profile: DataProfile | None = None,
                measure_tokenizer: bool = False) -> Planned:
    """Read what the estimate needs: config, safetensors headers, tokenizer and the training file.

    Args:
        tokenizer: an already loaded tokenizer (``ayar train``'s pre-flight passes its own).
        profile: examples already built (pre-flight); else the training file is tokenised.
        measure_tokenizer: also measure the tokenizer on the texts of the records tokenised
            (:mod:`ayar.plan.tokenizer`); needs ``profile`` None.

    Raises:
        AyarError: the model folder, its config or the data file cannot be read.
    """
    from ayar.train.loop import total_steps

    inv = read_inventory(recipe.model.path)
    fit = None
    if profile is None:
        if tokenizer is None:
            from ayar.model.load import load_tokenizer

            m = recipe.model
            tokenizer = load_tokenizer(m.path, chat_template=m.chat_template, revision=m.revision,
                                       trust_remote_code=m.trust_remote_code)
        profile = profile_file(recipe.data.train, tokenizer, recipe, seed=recipe.train.seed)
        if measure_tokenizer:
            fit = _tokenizer_fit(recipe, tokenizer)
    trainable = trainable_parameters(inv, recipe.adapter)
    steps = total_steps(max(profile.examples, 1), recipe.train)
    return Planned(recipe, inv, trainable, profile, steps, read_teacher(recipe), fit)


def _tokenizer_fit(recipe, tokenizer) -> TokenizerFit:
    try:
        texts = sample_texts(recipe.data.train, seed=recipe.train.seed)
    except AyarError as exc:  # the examples were built; only the texts could not be read back
        return TokenizerFit(None, note=str(exc))
    return tokenizer_fit(tokenizer, texts, name=recipe.model.path)


def read_teacher(recipe) -> TeacherPlan | None:
    """The distillation teacher's sizes, from its config and safetensors headers (None: not ``method: distill``).

    Raises:
        AyarError: the teacher (or a run folder's base) is not a local model folder.
    """
    if recipe.method != "distill" or recipe.distill is None:
        return None
    from ayar.model.run_folder import model_spec

    d = recipe.distill
    spec = model_spec(d.teacher)
    inv = read_inventory(spec.base, "distill.teacher")
    adapter = adapter_parameters(Path(spec.adapter)) if spec.adapter else 0
    return TeacherPlan(d.teacher, inv, adapter, spec.quantization, d.teacher_logprobs, min(d.top_k, inv.dims.vocab))


def _bf16(device: Device) -> bool:
    if device.device_class != "cpu":
        return True
    from ayar.model.load import cpu_has_bf16

    return cpu_has_bf16()


def resolve_setup(p: Planned, device: Device, stream: Stream, accumulation: int = 1, **changes) -> memory.Setup:
    """The settings a run of ``p.recipe`` would use on ``device`` (``changes`` override recipe values)."""
    from ayar.train.reference import reference_kind

    r = p.recipe
    adapter = changes.get("adapter", r.adapter.type)
    quant = changes.get("quantization", r.model.quantization)
    bf16 = _bf16(device)
    dtype = r.model.dtype
    weight_bytes = 4 if dtype == "fp32" or (dtype == "auto" and (adapter == "full" or not bf16)) else 2
    precision = r.train.precision
    act_bytes = 4 if precision == "fp32" or (precision == "auto" and not bf16) else 2
    rows, seq, targets = stream.largest()
    kind = reference_kind(r) if r.method in ("dpo", "kto") else None
    kto = r.method == "kto"
    grad_rows = rows // 2 if kto else rows
    return memory.Setup(
        adapter=adapter, r=r.adapter.r, dropout=r.adapter.dropout, target_modules=r.adapter.target_modules,
        quantization=quant, weight_bytes=weight_bytes, act_bytes=act_bytes, rows=grad_rows, seq=seq,
        targets=targets // 2 if kto else targets, checkpointing=changes.get("checkpointing", r.train.gradient_checkpointing),
        reference=kind, reference_rows=rows if kind in ("adapter_disabled", "copy") else 0,
        no_grad_rows=rows - grad_rows, host_tokens=p.profile.tokens, accumulating=accumulation > 1)


def estimate_device(p: Planned, device: Device, *, calibrations: dict[str, Calibration] | None = None,
                    micro_batch: int | None = None, **changes) -> DeviceEstimate:
    """Memory terms and a time range for the recipe (with ``changes``) on ``device``."""
    cal = (calibrations or load_calibrations()).get(device.device_class) or load_calibrations()["cuda"]
    t = p.recipe.train
    mb = micro_batch or t.micro_batch_size
    accumulation = max(1, t.gradient_accumulation_steps * t.micro_batch_size // mb) if micro_batch else \
        t.gradient_accumulation_steps
    stream = p.stream(mb, accumulation)
    s = resolve_setup(p, device, stream, accumulation, **changes)
    trainable = p.trainable if s.adapter == p.recipe.adapter.type else trainable_parameters(
        p.inventory, _adapter(p, s.adapter))
    host = device.device_class == "cpu"
    terms = memory.breakdown(p.inventory, s, trainable, overhead=cal.overhead_bytes,
                             activation_factor=cal.activation_factor, host=host)
    precompute_peak = _teacher_memory(p, s, device, cal, terms, host) if p.teacher else 0.0
    flops = run_flops(p, s, stream, trainable)
    steps = p.steps
    fixed = cal.step_overhead_s * layer_passes(p, stream.micro_batches) + cal.optimizer_s_per_param * trainable * steps
    seconds = tuple(flops / (device.peak_flops * m) + fixed for m in (cal.mfu[1], cal.mfu[0]))
    return DeviceEstimate(device, s, terms, seconds, flops, cal, teacher_flops(p, stream), precompute_peak)


def _teacher_memory(p: Planned, s: memory.Setup, device: Device, cal: Calibration, terms: dict[str, float],
                    host: bool) -> float:
    """Add the teacher's terms to ``terms`` (resident on the fly, 0 when precomputed); returns the pass's peak.

    The teacher loads in fp32 on the CPU, else in bf16 (:func:`ayar.train.teacher.teacher_dtype`). The
    precompute pass runs after the student is loaded, before any optimizer state or activation exists.
    """
    t = p.teacher
    ts = memory.teacher_setup(s, 4 if device.device_class == "cpu" else 2, t.quantization)
    resident = memory.teacher_weights(t.inventory, ts, t.adapter_params)
    forward = memory.teacher_forward(t.inventory, ts) * cal.activation_factor
    if t.mode == "on_the_fly":
        terms["teacher"], terms["teacher_forward"] = resident, forward
        return 0.0
    terms["teacher"] = terms["teacher_forward"] = 0.0
    if host:
        terms["data"] += p.teacher_file_bytes  # the top-k are held in RAM while training
    return terms["weights"] + terms["adapter"] + resident + forward + terms["data"] + terms["overhead"]


def layer_passes(p: Planned, micro_batches: int) -> float:
    """Layer forwards the fixed per-layer cost applies to: the student's, plus the teacher's on every
    micro-batch (on the fly) or on the precompute pass's batches."""
    n = micro_batches * p.inventory.dims.layers
    t = p.teacher
    if t is not None:
        batches = micro_batches if t.mode == "on_the_fly" else math.ceil(
            p.profile.examples / p.recipe.train.micro_batch_size)
        n += batches * t.inventory.dims.layers
    return n


def _adapter(p: Planned, kind: str):
    return p.recipe.adapter.model_copy(update={"type": kind})


def work(p: Planned, s: memory.Setup, trainable: int) -> compute.Work:
    rows = s.rows + s.no_grad_rows
    return compute.Work(full=s.adapter == "full", adapter_params=0 if s.adapter == "full" else trainable,
                        checkpointing=s.checkpointing, reference_forward=s.reference in ("adapter_disabled", "copy"),
                        no_grad_share=s.no_grad_rows / rows if rows else 0.0)


def run_flops(p: Planned, s: memory.Setup, stream: Stream, trainable: int) -> float:
    """FLOPs of every simulated micro-batch, scaled to the run, plus a precompute pass over the data."""
    w = work(p, s, trainable)
    total = sum(compute.micro_batch_flops(p.inventory, rows, seq, targets, w) for rows, seq, targets in stream.shapes)
    if stream.shapes and stream.micro_batches > len(stream.shapes):
        total *= stream.micro_batches / len(stream.shapes)
    if s.reference == "precompute":
        forward_only = compute.Work(full=False, adapter_params=0, checkpointing=False, reference_forward=False,
                                    no_grad_share=1.0)
        per_token = compute.micro_batch_flops(p.inventory, 1, 1, 0, forward_only)
        total += per_token * p.profile.tokens
    return total + teacher_flops(p, stream)


def teacher_flops(p: Planned, stream: Stream) -> float:
    """The teacher's forward FLOPs over the run: on every micro-batch (on the fly), or once per example
    (precompute: the pass batches examples of similar length, so their padding is left out)."""
    t = p.teacher
    if t is None:
        return 0.0
    lora = 2.0 * t.adapter_params  # per token

    def forward(rows: int, seq: int, targets: int) -> float:
        return compute.forward_flops(t.inventory, rows * seq, seq, targets) + lora * rows * seq

    if t.mode == "on_the_fly":
        total = sum(forward(*shape) for shape in stream.shapes)
        if stream.shapes and stream.micro_batches > len(stream.shapes):  # scaled to the run, as run_flops does
            total *= stream.micro_batches / len(stream.shapes)
        return total
    rows = [row for example in p.profile.rows for row in example]
    once = sum(forward(1, length, targets) for length, targets in rows)
    return once * (p.profile.examples / len(p.profile.rows)) if p.profile.rows else 0.0


def _fits_with(p: Planned, device: Device, cals, **changes) -> DeviceEstimate:
    return estimate_device(p, device, calibrations=cals, **changes)


def candidates(p: Planned) -> list[tuple[str, dict]]:
    """Changes to try when the recipe does not fit, each with the recipe keys it sets."""
    r = p.recipe
    out: list[tuple[str, dict]] = []
    ckpt = r.train.gradient_checkpointing
    if not ckpt:
        out.append(("fits with gradient checkpointing", {"checkpointing": True}))
    mb = r.train.micro_batch_size
    while mb > 1:
        mb //= 2
        out.append((f"fits with micro-batch {mb}", {"micro_batch": mb}))
        if not ckpt:
            out.append((f"fits with micro-batch {mb} and gradient checkpointing", {"micro_batch": mb, "checkpointing": True}))
    if r.model.quantization == "none":
        adapter = "lora" if r.adapter.type == "full" else r.adapter.type
        for mb_q in sorted({r.train.micro_batch_size, 1}, reverse=True):
            out.append(("fits with QLoRA", {"quantization": "nf4", "adapter": adapter, "checkpointing": True,
                                            "micro_batch": mb_q}))
    return out


def recipe_keys(p: Planned, change: dict) -> dict[str, object]:
    """The ``--set`` values a change means."""
    keys: dict[str, object] = {}
    t = p.recipe.train
    if change.get("checkpointing"):
        keys["train.gradient_checkpointing"] = True
    if "micro_batch" in change and change["micro_batch"] != t.micro_batch_size:
        keys["train.micro_batch_size"] = change["micro_batch"]
        keys["train.gradient_accumulation_steps"] = t.gradient_accumulation_steps * t.micro_batch_size // change[
            "micro_batch"]
    if change.get("quantization"):
        keys["model.quantization"] = change["quantization"]
    if change.get("adapter") and change["adapter"] != p.recipe.adapter.type:
        keys["adapter.type"] = change["adapter"]
    return keys


def max_micro_batch(p: Planned, device: Device, cals, change: dict) -> int:
    """The largest micro-batch that fits with ``change`` applied (0: not even 1)."""
    base = {k: v for k, v in change.items() if k != "micro_batch"}
    lo, hi = 0, 1
    while hi <= MAX_MICRO_BATCH and _fits_with(p, device, cals, micro_batch=hi, **base).fits:
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_MICRO_BATCH + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits_with(p, device, cals, micro_batch=mid, **base).fits else (lo, mid)
    return lo


def fit_row(p: Planned, device: Device, cals: dict[str, Calibration] | None = None, *,
            search_batch: bool = True) -> FitRow:
    """Does the recipe fit on ``device``; if not, the cheapest (fastest) change that does.

    Args:
        search_batch: also find the largest micro-batch that fits (the fit table's column).
    """
    cals = cals or load_calibrations()
    as_written = estimate_device(p, device, calibrations=cals)
    largest = (lambda change: max_micro_batch(p, device, cals, change)) if search_batch else (lambda change: 0)
    if as_written.fits:
        return FitRow(device, "fits", as_written, as_written, {}, largest({}))
    fitting = []
    for order, (status, change) in enumerate(candidates(p)):
        est = _fits_with(p, device, cals, **change)
        if est.fits:
            fitting.append((est.seconds[1], order, status, change, est))
    if not fitting:
        return FitRow(device, "does not fit", as_written, None)
    # the fastest; on a tie the earlier candidate (checkpointing before smaller batches before QLoRA)
    _, _, status, change, est = min(fitting, key=lambda f: (f[0], f[1]))
    return FitRow(device, status, as_written, est, recipe_keys(p, change), largest(change))
