"""Fully sharded data parallel training (``train.distributed: fsdp``), with torch's FSDP2 ``fully_shard``.

With several processes (``torchrun``, or ``accelerate launch`` with a plain
multi-process config), each decoder layer becomes one FSDP unit and the loss
module the root unit, which holds what is left: embeddings, final norm and
output head. Parameters, gradients and AdamW's state are split across the
processes; a unit's full weights exist only while it runs. Gradients are
reduce-scattered and averaged over processes, just as DDP's all-reduce averages
them, so the loop's loss normalisation does not change.

Weights and optimizer state leave their shards only to be written:
:func:`full_tensors` gathers them one tensor at a time onto the main process's
CPU, so checkpoints and saved models have exactly the single-process format;
:func:`shard_like` cuts a loaded full tensor back into this process's shard.

accelerate's FSDP plugin is not used: on a CPU accelerate runs the job as
multi-process DDP and ignores the plugin (accelerate 1.15), so that path could
not be tested without several GPUs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ayar.errors import AyarError
from ayar.train.losses import unwrap

if TYPE_CHECKING:
    from accelerate import Accelerator


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (the classes transformers lists in ``_no_split_modules``).

    Raises:
        AyarError: the model names no such class, or none is found in it.
    """
    inner = unwrap(model)
    names = set(getattr(inner, "_no_split_modules", None) or ())
    layers = [m for m in inner.modules() if type(m).__name__ in names]
    if not layers:
        raise AyarError(f"train.distributed fsdp: cannot find the decoder layers of {type(inner).__name__} (its "
                        "_no_split_modules names none); use train.distributed: ddp for this model")
    return layers


def shard(loss_model: nn.Module, model: nn.Module, accelerator: Accelerator) -> None:
    """Shard ``model`` in place across all processes: one FSDP unit per decoder layer, ``loss_model`` the root.

    Every process must hold the same full weights when this is called (FSDP2 keeps
    each process's own slice, it broadcasts nothing): the same files and the same
    seed give that. Build the optimizer afterwards: parameters become DTensors.

    Raises:
        AyarError: the job was launched with accelerate's own FSDP or DeepSpeed, which
            would wrap the model a second time.
    """
    from accelerate.utils import DistributedType
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    kind = accelerator.distributed_type
    if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise AyarError(f"train.distributed fsdp: this job was launched with accelerate's {kind.value} integration, "
                        "which would wrap the model a second time; ayar shards the model itself. Launch with "
                        "torchrun, or with an accelerate config of distributed_type MULTI_GPU "
                        "(examples/accelerate/ddp.yaml)")
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(loss_model, mesh=mesh)


def is_sharded(module: nn.Module) -> bool:
    """Whether :func:`shard` has sharded ``module`` or any module inside it."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in module.modules())


@contextlib.contextmanager
def no_sync(loss_model: nn.Module, accelerator: Accelerator) -> Iterator[None]:
    """Accumulate this micro-batch's gradient locally, without communicating (DDP or FSDP)."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(loss_model, FSDPModule):
        with accelerator.no_sync(loss_model):
            yield
        return
    loss_model.set_requires_gradient_sync(False)  # keeps unsharded gradients until the last micro-batch
    try:
        yield
    finally:
        loss_model.set_requires_gradient_sync(True)


@torch.no_grad()
def full_tensors(state, keep: bool):
    """``state`` (nested dicts, lists, tuples) with every sharded tensor gathered whole onto the CPU.

    Collective when anything is sharded: every process calls it with a state of the
    same structure, and only where ``keep`` is the result built (elsewhere None).
    A tensor that appears twice (tied embeddings) stays one tensor.
    """
    from torch.distributed.tensor import DTensor

    done: dict[int, torch.Tensor | None] = {}

    def walk(value):
        if isinstance(value, torch.Tensor):
            if id(value) not in done:
                whole = value.full_tensor().cpu() if isinstance(value, DTensor) else value.detach()
                done[id(value)] = whole if keep else None
            return done[id(value)]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value

    gathered = walk(state)
    return gathered if keep else None


def shard_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value``, a full tensor, cut the way ``like`` is sharded (``value`` itself when ``like`` is not)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return value
    # src_data_rank=None: every process holds the full value (read from the same file) and keeps its slice.
    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def shard_optimizer_state(state: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A full optimizer state dict, as saved, with each per-parameter tensor cut like its parameter."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids = [i for group in state["param_groups"] for i in group["params"]]
    by_id = dict(zip(ids, params, strict=True))
    per_param = {i: {k: v if k == "step" or not torch.is_tensor(v) else shard_like(v, by_id[i])
                     for k, v in values.items()}
                 for i, values in state["state"].items()}
    return {**state, "state": per_param}
