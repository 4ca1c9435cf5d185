"""``ayar plan``: the estimate as text or JSON, a run's prediction against its measurement, and the
pre-flight check ``ayar train`` runs before loading weights."""

from __future__ import annotations

import json
from pathlib import Path

from ayar.errors import AyarError
from ayar.plan.advice import advise
from ayar.plan.catalogue import GIB, Device, load_calibrations, load_catalogue, pick_devices
from ayar.plan.data import profile_examples
from ayar.plan.estimate import DeviceEstimate, FitRow, Planned, estimate_device, fit_row, plan_recipe
from ayar.plan.runs import device_for, measured_seconds, read_run, this_device

TERMS = ("weights", "adapter", "gradients", "optimizer", "activations", "loss_head", "reference", "teacher",
         "teacher_forward", "data", "overhead")


def human_bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB / 4 else f"{n / 2**20:.1f} MiB"


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def _range(lo: float, hi: float, fmt) -> str:
    a, b = fmt(lo), fmt(hi)
    return a if a == b else f"{a}–{b}"


def plan_to_dict(p: Planned, rows: list[FitRow]) -> dict:
    """Everything ``ayar plan --json`` prints."""
    r, inv, prof = p.recipe, p.inventory, p.profile
    stream = p.stream(r.train.micro_batch_size, r.train.gradient_accumulation_steps)
    return {
        "model": {"path": r.model.path, "architecture": inv.dims.model_type, "source": inv.source,
                  "total_parameters": inv.total, "trainable_parameters": p.trainable, "adapter": r.adapter.type},
        "data": {"file": r.data.train, "records": prof.records, "examples": prof.examples, "tokens": prof.tokens,
                 "target_tokens": prof.target_tokens, "sampled": prof.sampled, "tokens_rel_error_95": prof.rel_error,
                 "truncated": prof.truncated, "padding_fraction": stream.padding, "steps": p.steps,
                 "micro_batches": stream.micro_batches, "largest_micro_batch": dict(zip(
                     ("rows", "seq", "targets"), stream.largest(), strict=True))},
        "tokenizer": p.tokenizer_fit.to_dict() if p.tokenizer_fit else None,
        "teacher": _teacher_dict(p, rows[0].estimate) if p.teacher else None,
        "devices": [_row_dict(row) for row in rows],
        "advice": [{"rule": a.rule, "message": a.message, "reason": a.reason} for a in advise(p, rows)],
    }


def _teacher_dict(p: Planned, e: DeviceEstimate) -> dict:
    t = p.teacher
    return {"path": t.path, "architecture": t.inventory.dims.model_type, "total_parameters": t.inventory.total,
            "adapter_parameters": t.adapter_params, "teacher_logprobs": t.mode,
            "top_k": t.top_k if t.mode == "precompute" else None, "top_k_file_bytes": p.teacher_file_bytes,
            "forward_flops": e.teacher_flops, "precompute_peak_memory_bytes": round(e.precompute_peak)}


def _teacher_line(p: Planned, e: DeviceEstimate) -> str:
    t = p.teacher
    what = f"teacher {t.path} ({t.inventory.dims.model_type}, {t.inventory.total:,} parameters): "
    if t.mode == "on_the_fly":
        return what + (f"resident while training, its forward on every micro-batch ({e.teacher_flops:.3g} FLOPs, "
                       "in the time above)")
    return what + (f"top-{t.top_k} precomputed in one pass before training ({e.teacher_flops:.3g} FLOPs, in the "
                   f"time above; peak {human_bytes(e.precompute_peak)}, then freed); the file takes "
                   f"{human_bytes(p.teacher_file_bytes)} on disk and in RAM (training split)")


def _estimate_dict(e: DeviceEstimate) -> dict:
    return {"memory_bytes": {k: round(v) for k, v in e.terms.items()}, "peak_memory_bytes": round(e.peak),
            "precompute_peak_memory_bytes": round(e.precompute_peak), "fits": e.fits, "seconds": [round(s, 1) for s in e.seconds], "flops": e.flops,
            "cost_usd": list(e.cost) if e.cost else None, "calibration": e.calibration.source}


def _row_dict(row: FitRow) -> dict:
    d = row.device
    return {"device": d.name, "memory_bytes": d.memory_bytes, "peak_tflops_bf16": d.peak_flops / 1e12,
            "price_per_hour": list(d.price_per_hour) if d.price_per_hour else None, "status": row.status,
            "change": row.change, "max_micro_batch": row.max_micro_batch, "as_written": _estimate_dict(row.estimate),
            "with_change": _estimate_dict(row.chosen) if row.chosen and row.change else None}


def render(p: Planned, rows: list[FitRow]) -> str:
    """The plan as text: model, data, the memory breakdown on the first device, the fit table, advice."""
    r, inv, prof = p.recipe, p.inventory, p.profile
    stream = p.stream(r.train.micro_batch_size, r.train.gradient_accumulation_steps)
    share = p.trainable / inv.total if inv.total else 0
    quant = f", {r.model.quantization}" if r.model.quantization != "none" else ""
    lines = [f"model   {r.model.path} ({inv.dims.model_type}, from {inv.source}): {inv.total:,} parameters; "
             f"{r.adapter.type}{quant}: {p.trainable:,} trainable ({share:.2%})"]
    est = "" if not prof.sampled else f" (estimated from {len(prof.rows):,} sampled records, ±{prof.rel_error:.1%})"
    rows_, seq, targets = stream.largest()
    lines.append(f"data    {r.data.train}: {prof.examples:,} examples, {prof.tokens:,} tokens ({prof.target_tokens:,} "
                 f"target){est}; padding {stream.padding:.1%}; {p.steps:,} steps x "
                 f"{r.train.gradient_accumulation_steps} micro-batches of {r.train.micro_batch_size}; largest "
                 f"micro-batch {rows_} rows x {seq} tokens, {targets} target positions")
    if p.tokenizer_fit:
        lines += _tokenizer_lines(p.tokenizer_fit)
    first = rows[0].estimate
    lines.append(f"memory  on {first.device.name} ({human_bytes(first.device.memory_bytes)}), recipe as written:")
    for k in TERMS:
        if first.terms.get(k):
            lines.append(f"  {k:<16}{human_bytes(first.terms[k]):>12}")
    lines.append(f"  {'peak':<16}{human_bytes(first.peak):>12}  {'fits' if first.fits else 'does NOT fit'}")
    lines.append(f"time    {_range(*first.seconds, human_seconds)} ({first.flops:.3g} FLOPs; calibration: "
                 f"{first.calibration.source})")
    if p.teacher:
        lines.append(_teacher_line(p, first))
    lines.append("")
    lines.append(f"{'device':<12}{'memory':>10}  {'peak':>10}  {'status':<44}{'max mb':>7}  {'time':<14}cost")
    for row in rows:
        e = row.chosen or row.estimate
        cost = _range(*e.cost, lambda c: f"${c:,.2f}" if c >= 0.01 else "<$0.01") if e.cost else "-"
        status = row.status + (f" ({', '.join(f'{k}={v}' for k, v in row.change.items())})" if row.change else "")
        lines.append(f"{row.device.name:<12}{human_bytes(row.device.memory_bytes):>10}  {human_bytes(e.peak):>10}  "
                     f"{status:<44}{_largest(row.max_micro_batch):>7}  {_range(*e.seconds, human_seconds):<14}{cost}")
    advice = advise(p, rows)
    if advice:
        lines.append("")
        lines += [f"advice  {a.message} ({a.reason})" for a in advice]
    return "\n".join(lines)


def _tokenizer_lines(fit) -> list[str]:
    """The tokenizer's figures on the training text, and the measured saving of extension when there is one."""
    e, x = fit.efficiency, fit.extension
    if e is None:
        return [f"tokens  not measured: {fit.note}"]
    worst = [f"{w['word']} = {'|'.join(w['pieces'])}" for w in e.fragmented[:3] if len(w["pieces"]) > 1]
    lines = [f"tokens  {e.fertility:.2f} tokens per word, {e.chars_per_token:.2f} characters per token, "
             f"{e.split_3plus:.0%} of words in 3+ pieces, {e.byte_fallback_rate:.1%} byte/unknown tokens "
             f"(on the {e.texts:,} texts of those records)" + (f"; most fragmented: {'; '.join(worst)}" if worst else "")]
    if x is not None:
        lines.append(f"        extended by the {x.added:,} tokens learned from {x.learned_texts:,} of these texts: "
                     f"{x.reduction:.0%} fewer tokens on the other {x.heldout_texts:,}")
    return lines


def _largest(n: int) -> str:
    from ayar.plan.estimate import MAX_MICRO_BATCH

    return f">={n}" if n >= MAX_MICRO_BATCH else str(n)


def plan_command(recipe, gpu: str | None) -> tuple[Planned, list[FitRow]]:
    """Plan ``recipe`` for ``gpu`` (a catalogue name, ``all``, or None: this machine)."""
    p = plan_recipe(recipe, measure_tokenizer=True)
    cals = load_calibrations()
    devices = pick_devices(load_catalogue(), gpu)
    return p, [fit_row(p, d, cals) for d in devices]


def compare_run(run_dir: Path) -> dict:
    """Predicted (with the current calibration) against measured, for one finished run."""
    recipe, summary = read_run(run_dir)
    measured = summary.get("measured")
    if not measured:
        raise AyarError(f"{run_dir}/summary.json: no measurements (trained before ayar recorded them)")
    p = plan_recipe(recipe)
    p.steps = measured["steps"]
    device = device_for(measured)
    est = estimate_device(p, device)
    seconds = measured_seconds(measured) or 0.0
    mid = (est.seconds[0] + est.seconds[1]) / 2
    return {"run": str(run_dir), "device": device.name, "predicted_peak_bytes": est.peak,
            "measured_peak_bytes": measured["peak_memory_bytes"], "memory_error": est.peak / measured[
                "peak_memory_bytes"] - 1, "predicted_seconds": list(est.seconds), "measured_seconds": seconds,
            "time_error": mid / seconds - 1 if seconds else None, "terms": est.terms,
            "measured_mfu": measured.get("mfu"), "calibration": est.calibration.source}


def render_comparison(c: dict) -> str:
    time_err = f"{c['time_error']:+.0%}" if c["time_error"] is not None else "-"
    return (f"{c['run']} on {c['device']}: peak memory predicted {human_bytes(c['predicted_peak_bytes'])}, measured "
            f"{human_bytes(c['measured_peak_bytes'])} ({c['memory_error']:+.0%}); time predicted "
            f"{_range(*c['predicted_seconds'], human_seconds)}, measured {human_seconds(c['measured_seconds'])} "
            f"({time_err} from the middle of the range)")


def preflight(recipe, tokenizer, examples, device, *, force: bool, say) -> None:
    """Before loading weights: stop when the run cannot fit on ``device``, naming the cheapest change.

    Raises:
        AyarError: the estimate exceeds the memory this process could hold (not with ``force``).
    """
    from ayar.plan.measure import available_memory

    try:
        p = plan_recipe(recipe, tokenizer=tokenizer, profile=profile_examples(examples))
    except AyarError:
        return  # not a local folder: nothing to read the headers from
    base = this_device()
    dev = Device(base.name, available_memory(device), base.peak_flops, base.price_per_hour, base.device_class,
                 base.source)
    row = fit_row(p, dev, search_batch=False)
    e = row.estimate
    say(f"plan: peak memory ~{human_bytes(e.peak)} of {human_bytes(dev.memory_bytes)} available"
        f"{f' (teacher precompute pass ~{human_bytes(e.precompute_peak)})' if e.precompute_peak else ''}; "
        f"time ~{_range(*e.seconds, human_seconds)}")
    if e.fits or force:
        return
    terms = ", ".join(f"{k} {human_bytes(v)}" for k, v in e.terms.items() if v)
    if e.precompute_peak > e.peak:
        raise AyarError(f"the teacher's precompute pass needs ~{human_bytes(e.precompute_peak)} (student and "
                        f"teacher weights, one teacher forward) but {device.type} has "
                        f"{human_bytes(dev.memory_bytes)} available; use a smaller teacher or a device with more "
                        "memory. Pass --force to try anyway")
    fix = ("; cheapest change that fits: " + " ".join(f"--set {k}={str(v).lower()}" for k, v in row.change.items())
           + f" (peak ~{human_bytes(row.chosen.peak)}, ~{_range(*row.chosen.seconds, human_seconds)})") \
        if row.chosen else "; no change ayar knows of fits: use a device with more memory or a smaller model"
    raise AyarError(f"this run needs ~{human_bytes(e.peak)} but {device.type} has {human_bytes(dev.memory_bytes)} "
                    f"available ({terms}){fix}. Pass --force to try anyway")


def plan_cli(targets: list[Path], *, gpu: str | None, as_json: bool, calibrate: bool, overrides: list[str]) -> str:
    """What ``ayar plan`` prints, for a recipe, run folders, or ``--calibrate``.

    Raises:
        AyarError: a target that is neither a recipe nor a finished run, or bad arguments.
    """
    from ayar.plan.calibrate import calibrate as fit_runs
    from ayar.recipe import load_recipe

    if calibrate:
        doc = fit_runs(targets)
        if as_json:
            return json.dumps(doc, indent=2)
        return "\n".join(f"calibrated {name}: MFU {c['mfu'][0]:.1%}–{c['mfu'][1]:.1%}, step overhead "
                         f"{c['step_overhead_s'] * 1e3:.2f} ms per micro-batch and layer, memory overhead "
                         f"{c['overhead_gib']:.2f} GiB, activation factor {c['activation_factor']:.2f} "
                         f"({c.get('runs', '?')} runs)" for name, c in doc["classes"].items())
    if all(t.is_dir() for t in targets):
        comparisons = [compare_run(t) for t in targets]
        return json.dumps(comparisons, indent=2) if as_json else "\n".join(map(render_comparison, comparisons))
    if len(targets) != 1:
        raise AyarError("ayar plan takes one recipe (or run folders, or --calibrate with run folders)")
    p, rows = plan_command(load_recipe(targets[0], overrides), gpu)
    return json.dumps(plan_to_dict(p, rows), indent=2, ensure_ascii=False) if as_json else render(p, rows)
