"""`train.parallel=fsdp`: a point's weights sharded over its ranks with FSDP2 (`fully_shard`).

DDP (the default) keeps a whole model, its gradients and optimizer state on every rank; FSDP keeps
1/N of each on each rank and gathers a block's weights only while it computes. Every transformer
block (each item of the model's layer lists) is one unit, the rest of the model the root unit.
The model is built on the CPU and `fully_shard` puts each rank's shards on its device.

What stays as with DDP: the global batch, the loss weighing and the averaged gradients (so the
updates equal one process's), rank 0 as the one writer. What differs: every forward is collective,
so every rank evaluates (the same rows; rank 0 keeps the scores), and whatever leaves the ranks
(checkpoints, best weights, adapters, saved models) is gathered first into full tensors on rank 0's
CPU. Checkpoints hold exactly what a one-process run writes, so a run resumes on any rank count,
with or without FSDP.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from .errors import TrainingError

PARALLEL = ("ddp", "fsdp")


def check_parallel(train_cfg, method, model_cfg) -> str:
    """train.parallel as ddp | fsdp; a one-line TrainingError for a point FSDP does not train."""
    parallel = str(train_cfg.get("parallel", "ddp"))
    if parallel not in PARALLEL:
        raise TrainingError(f"train.parallel must be one of {', '.join(PARALLEL)}, got {parallel!r}")
    if parallel != "fsdp" or int(train_cfg.get("nproc", 1)) == 1:
        return parallel
    if what := method.fsdp_refusal():  # the method says (relora merges, a warm start flips the base, ...)
        raise TrainingError(f"train.parallel=fsdp does not support {what} (sharded base weights); use ddp")
    if str(model_cfg.get("arch", "")) == "lstm":
        raise TrainingError("train.parallel=fsdp needs a transformer (model=lstm has no blocks to shard); use ddp")
    if method.task.decodes:  # generate() runs its own loop of forwards: not made collective here
        raise TrainingError(f"train.parallel=fsdp does not decode (task {method.task.name}); use ddp")
    return parallel


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """FSDP2 over all ranks of the process group: each block its own unit, then the root. Every
    rank's shards are cut from rank 0's weights (DDP's constructor broadcasts them too): a random
    head or adapter init that drew differently on some rank cannot stitch a model from two."""
    if device.type == "cuda":
        torch.cuda.set_device(device)  # fully_shard places the shards on the current device
    initial = dict(model.state_dict()) if dist.get_rank() == 0 else {}  # references: no copy
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for block in blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    load_weights(model, initial, from_rank0=True)
    return model


def blocks(model: nn.Module) -> list[nn.Module]:
    """The items of the outermost layer lists (decoder layers, BERT layers, T5 blocks)."""
    found: list[nn.Module] = []
    inside: set[str] = set()
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue
        if isinstance(module, nn.ModuleList) and any(True for _ in module.parameters()):
            found.extend(module)
            inside.add(name)
    return found


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Every unit back to its shards. The root unit keeps its weights gathered after a forward (for
    the backward that usually follows): its parameters are then plain tensors, not the shards that
    the optimizer holds and a state dict must read and write."""
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


# ---------------------------------------------------------------- full tensors on rank 0 (collective)
_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FROM_EVERY_RANK = StateDictOptions(full_state_dict=True, strict=False)


def full_weights(model: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict, or only its trainable weights (a LoRA run does not gather
    its frozen base), on rank 0's CPU; {} on the other ranks."""
    reshard(model)
    return get_model_state_dict(model, options=replace(_ON_RANK0, ignore_frozen_params=trainable_only))


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], from_rank0: bool) -> None:
    """Full tensors (some or all of the state dict) into this rank's shards: rank 0's `weights`
    (from_rank0; the other ranks pass {}), or each rank's own copy of the same checkpoint."""
    names = sorted(weights)
    if from_rank0:
        message = [names]
        dist.broadcast_object_list(message, src=0)
        names = message[0]
    reshard(model)
    current = model.state_dict()  # the sharded parameters themselves (DTensors), buffers whole
    with torch.no_grad():
        for name in names:
            target = current[name]
            full = (
                weights[name].to(target.device)
                if name in weights
                else torch.empty(target.shape, dtype=target.dtype, device=target.device)
            )
            if isinstance(target, DTensor):
                source = distribute_tensor(
                    full, target.device_mesh, target.placements, src_data_rank=0 if from_rank0 else None
                )
                target.copy_(source)
            else:
                if from_rank0:
                    dist.broadcast(full, src=0)
                target.copy_(full)


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer's state as a one-process `optimizer.state_dict()` (parameters by position),
    on rank 0; {} on the other ranks."""
    reshard(model)
    state = get_optimizer_state_dict(model, optimizer, options=_ON_RANK0)
    if not state:
        return {}
    index = {name: i for i, name in enumerate(_held_names(model, optimizer))}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def load_optimizer_state(model: nn.Module, optimizer, saved: dict) -> None:
    """A one-process `optimizer.state_dict()` (every rank read it) into the sharded optimizer."""
    reshard(model)
    names = _held_names(model, optimizer)
    by_name = {
        "state": {names[i]: value for i, value in saved["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in saved["param_groups"]],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=_FROM_EVERY_RANK)


def _held_names(model: nn.Module, optimizer) -> list[str]:
    """The names of the optimizer's parameters, in its order (what optimizer.state_dict() numbers)."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [name_of[id(p)] for group in optimizer.param_groups for p in group["params"]]


def save_pretrained(model: nn.Module, state: dict[str, torch.Tensor], folder) -> None:
    """An FSDP-trained Hugging Face model's gathered weights, as `from_pretrained` reads them. The
    config must name the model's own class, not the subclass FSDP2 swapped in (FSDP<Class>)."""
    model.save_pretrained(folder, state_dict=state)
    own_class = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    config = Path(folder) / "config.json"
    saved = json.loads(config.read_text())
    saved["architectures"] = [own_class.__name__]
    config.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")


def training_state_mb(model: nn.Module, optimizer) -> float:
    """MB of what this rank keeps to train: its weights, a gradient per trainable weight (alive
    during each step) and the optimizer's state; under FSDP only this rank's shards of each."""
    if is_sharded(model):
        reshard(model)

    def nbytes(tensor: torch.Tensor) -> int:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        return local.numel() * local.element_size()

    total = sum(nbytes(p) * (2 if p.requires_grad else 1) for p in model.parameters())
    total += sum(nbytes(v) for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))
    return round(total / 2**20, 3)
