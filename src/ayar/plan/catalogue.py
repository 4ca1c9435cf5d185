"""The device catalogue (GPUs and this machine's CPU) and the calibration constants.

Both are data files: ``data/gpus.yaml`` and ``data/calibration.yaml`` in this
package, overridden entry by entry by ``$AYAR_HOME/plan/gpus.yaml`` and
``$AYAR_HOME/plan/calibration.json`` (written by ``ayar plan --calibrate``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from ayar.errors import AyarError
from ayar.paths import ayar_home

DATA = Path(__file__).parent / "data"
GIB = 2**30


@dataclass(frozen=True)
class Device:
    name: str
    memory_bytes: int
    peak_flops: float  # dense bf16 FLOP/s
    price_per_hour: tuple[float, float] | None
    device_class: str  # "cuda" or "cpu": which calibration applies
    source: str = ""


@dataclass(frozen=True)
class Calibration:
    """Per device class: how the formulas meet measurements.

    ``mfu``: achieved share of peak FLOP/s (a range); ``step_overhead_s``: fixed
    seconds per micro-batch per layer (kernel launches, Python); ``overhead_bytes``:
    memory a training process holds besides the model's tensors (libraries, CUDA
    context, allocator slack); ``activation_factor``: measured / formula activations.
    """

    mfu: tuple[float, float]
    step_overhead_s: float
    overhead_bytes: float
    activation_factor: float
    source: str
    optimizer_s_per_param: float = 0.0
    peak_flops: float | None = None  # cpu: measured peak of one core (GPUs take theirs from the catalogue)


def plan_home() -> Path:
    return ayar_home() / "plan"


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise AyarError(f"{path}: not valid YAML: {exc}") from None


def load_calibrations() -> dict[str, Calibration]:
    """Bundled constants per device class, replaced by the user's ``calibration.json`` where present.

    Raises:
        AyarError: a calibration entry lacks a field.
    """
    raw = _read_yaml(DATA / "calibration.yaml").get("classes", {})
    user = plan_home() / "calibration.json"
    if user.is_file():
        try:
            raw.update(json.loads(user.read_text(encoding="utf-8")).get("classes", {}))
        except json.JSONDecodeError as exc:
            raise AyarError(f"{user}: not valid JSON ({exc}); delete it or rerun `ayar plan --calibrate`") from None
    out = {}
    for name, c in raw.items():
        try:
            out[name] = Calibration(
                mfu=tuple(c["mfu"]), step_overhead_s=float(c["step_overhead_s"]),
                overhead_bytes=float(c["overhead_gib"]) * GIB, activation_factor=float(c["activation_factor"]),
                source=str(c.get("source", "")), optimizer_s_per_param=float(c.get("optimizer_s_per_param", 0.0)),
                peak_flops=float(c["peak_tflops_bf16_per_core"]) * 1e12 if c.get("peak_tflops_bf16_per_core") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise AyarError(f"calibration for device class {name!r}: missing or bad field {exc}") from None
    return out


def cpu_device(calibration: Calibration, threads: int | None = None) -> Device:
    """This machine's CPU and RAM as a device (no price); peak = per-core peak x compute threads."""
    import psutil
    import torch

    threads = threads or torch.get_num_threads()
    return Device("cpu", psutil.virtual_memory().total, (calibration.peak_flops or 0.35e12) * threads, None, "cpu",
                  f"this machine: RAM from psutil, {threads} threads x per-core peak from calibration.yaml")


def load_catalogue() -> dict[str, Device]:
    """Bundled GPUs, the user's additions and replacements, and this machine's CPU.

    Raises:
        AyarError: an entry lacks a field or has a bad value (the file and entry are named).
    """
    entries = dict(_read_yaml(DATA / "gpus.yaml").get("devices", {}))
    sources = {name: DATA / "gpus.yaml" for name in entries}
    user = plan_home() / "gpus.yaml"
    if user.is_file():
        for name, entry in (_read_yaml(user).get("devices") or {}).items():
            entries[name], sources[name] = entry, user
    devices = {}
    for name, e in entries.items():
        try:
            price = e.get("price_per_hour")
            devices[name] = Device(name, int(float(e["memory_gib"]) * GIB), float(e["peak_tflops_bf16"]) * 1e12,
                                   (float(price[0]), float(price[1])) if price else None, e.get("class", "cuda"),
                                   e.get("source", ""))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise AyarError(f"{sources[name]}: device {name!r}: missing or bad field {exc} (needs memory_gib, "
                            "peak_tflops_bf16, price_per_hour: [low, high])") from None
    devices["cpu"] = cpu_device(load_calibrations()["cpu"])
    return devices


def pick_devices(catalogue: dict[str, Device], gpu: str | None) -> list[Device]:
    """The devices to plan for: one by name (case-insensitive prefix), ``all``, or None (this machine).

    Raises:
        AyarError: an unknown name (the catalogue is listed).
    """
    if gpu is None:
        return [catalogue["cpu"]] if not _cuda_name() else [_this_gpu(catalogue)]
    if gpu == "all":
        return list(catalogue.values())
    hits = [d for n, d in catalogue.items() if n.lower() == gpu.lower()] or \
        [d for n, d in catalogue.items() if n.lower().startswith(gpu.lower())]
    if len(hits) != 1:
        raise AyarError(f"--gpu {gpu}: {'ambiguous' if hits else 'unknown'}; choose one of "
                        f"{', '.join(catalogue)} or all (add your own in {plan_home() / 'gpus.yaml'})")
    return hits


def _cuda_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except (ImportError, RuntimeError):
        return None


def _this_gpu(catalogue: dict[str, Device]) -> Device:
    """The local GPU: its catalogue entry when the name matches, else its memory with H100's peak as a guess."""
    import torch

    name = _cuda_name() or "cuda"
    for key, device in catalogue.items():
        if key.split("-")[0].lower() in name.lower() and device.device_class == "cuda":
            return Device(name, torch.cuda.get_device_properties(0).total_memory, device.peak_flops,
                          device.price_per_hour, "cuda", device.source)
    return Device(name, torch.cuda.get_device_properties(0).total_memory, 989e12, None, "cuda",
                  "unknown GPU: peak assumed as H100's")
