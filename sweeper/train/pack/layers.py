"""Modules for packed training (MLoRA-style): one frozen base, K adapters, one forward per step.

The batch of a packed step is the concatenation (dim 0) of the K points' batches. A `PackContext`
says which adapter owns which rows. Two wrappers replace the base's modules in place:

- `MultiLoRALinear` (a LoRA target): the frozen base matmul runs ONCE over all rows; each adapter
  adds its own `B @ A` (times its scaling) to its own rows only.
- `SlicedModules` (a module that trains in full under LoRA: a classification head, or for lm the
  embeddings / norms / LM head): adapter k's own copy runs on its rows; outputs are concatenated
  (padded to the widest when heads differ in size, e.g. 2 vs 5 labels).

The adapters' modules are the very objects of each point's own PEFT model (`lora_A["default"]`,
`modules_to_save["default"]`), so the optimizers, checkpoints and `save_pretrained` of each point
see exactly what the packed forward trains. PEFT's own mixed-adapter batches are inference-only.

LoRA dropout: each adapter draws its masks from its own torch.Generator, with the mask shape the
point would have alone (its own padded width), so a packed run reproduces run_point's masks as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.lora import LORA_PREFIX


@dataclass
class Slice:
    key: int  # adapter index in the pack
    rows: int  # rows of the concatenated batch that belong to it (in order)
    width: int  # its own padded sequence length (dropout masks are drawn at this width)


@dataclass
class PackContext:
    slices: list[Slice] = field(default_factory=list)


@dataclass
class LoRAAdapter:
    lora_A: nn.Module
    lora_B: nn.Module
    scaling: float
    dropout: float
    generator: torch.Generator | None


def lora_dropout(x: torch.Tensor, p: float, width: int, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout like nn.Dropout (bernoulli_(1 - p), / (1 - p)) but from `generator`, on the
    first `width` positions only: the positions beyond are padding the point alone would not have."""
    if p == 0.0:
        return x
    if x.dim() < 3 or width >= x.shape[1]:
        noise = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p, generator=generator)
        return x * noise.div_(1 - p)
    head = x[:, :width]
    noise = torch.empty(head.shape, dtype=x.dtype, device=x.device).bernoulli_(1 - p, generator=generator)
    return torch.cat([head * noise.div_(1 - p), x[:, width:]], dim=1)


def split_rows(x: torch.Tensor, ctx: PackContext) -> tuple[torch.Tensor, ...]:
    """x's rows (dim 0) per slice of the pack context."""
    sizes = [s.rows for s in ctx.slices]
    if sum(sizes) != x.shape[0]:
        raise RuntimeError(f"pack context covers {sum(sizes)} rows, the batch has {x.shape[0]}")
    return x.split(sizes, dim=0)


class MultiLoRALinear(nn.Module):
    """A LoRA target holding K adapters: base(x) once, plus adapter k's delta on its rows."""

    def __init__(self, base: nn.Module, ctx: PackContext):
        super().__init__()
        self.base = base
        self.ctx = ctx
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.meta: dict[int, LoRAAdapter] = {}

    def add(self, key: int, adapter: LoRAAdapter) -> None:
        self.lora_A[str(key)], self.lora_B[str(key)] = adapter.lora_A, adapter.lora_B
        self.meta[key] = adapter

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        result = self.base(x, *args, **kwargs)
        deltas = []
        # split, not K slices: the backward of one split is one cat; K slices would each scatter into
        # a zero tensor the size of the whole batch (K^2 work, measured 15% of a K=8 step).
        for s, xs in zip(self.ctx.slices, split_rows(x, self.ctx)):
            adapter = self.meta.get(s.key)
            if adapter is None:  # this point has no LoRA on this layer
                deltas.append(torch.zeros((*xs.shape[:-1], result.shape[-1]), dtype=result.dtype, device=result.device))
                continue
            xs = xs.to(adapter.lora_A.weight.dtype)
            if self.training:
                xs = lora_dropout(xs, adapter.dropout, s.width, adapter.generator)
            deltas.append((adapter.lora_B(adapter.lora_A(xs)) * adapter.scaling).to(result.dtype))
        return result + torch.cat(deltas, dim=0)


class SlicedModules(nn.Module):
    """K copies of a module (e.g. a classification head): copy k runs on adapter k's rows."""

    def __init__(self, base: nn.Module, ctx: PackContext):
        super().__init__()
        self.base = base  # used for the rows of a point that has no copy of its own
        self.ctx = ctx
        self.copies = nn.ModuleDict()

    def add(self, key: int, module: nn.Module) -> None:
        self.copies[str(key)] = module

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        outs = []
        for s, xs in zip(self.ctx.slices, split_rows(x, self.ctx)):
            module = self.copies[str(s.key)] if str(s.key) in self.copies else self.base
            outs.append(module(xs, *args, **kwargs))
        width = max(o.shape[-1] for o in outs)
        if any(o.shape[-1] != width for o in outs):  # heads of different sizes (2 vs 5 labels): pad
            outs = [F.pad(o, (0, width - o.shape[-1])) for o in outs]
        return torch.cat(outs, dim=0)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def attach_adapter(base: nn.Module, key: int, peft_model, ctx: PackContext, generator) -> None:
    """Register point `key`'s LoRA layers and full-rank copies (from its own PEFT model) on the shared base."""
    from peft.tuners.lora import LoraLayer
    from peft.utils import ModulesToSaveWrapper

    inner = peft_model.base_model.model
    for name, module in inner.named_modules():
        if isinstance(module, LoraLayer):
            if "default" not in module.lora_A:
                raise ValueError(f"layer {name}: LoRA on target_parameters (e.g. an LSTM) cannot be packed")
            check_plain_lora(name, module)
            dropout = module.lora_dropout["default"]
            adapter = LoRAAdapter(
                module.lora_A["default"],
                module.lora_B["default"],
                float(module.scaling["default"]),
                float(getattr(dropout, "p", 0.0)),
                generator,
            )
            _slot(base, name, MultiLoRALinear, ctx).add(key, adapter)
        elif isinstance(module, ModulesToSaveWrapper):
            _slot(base, name, SlicedModules, ctx).add(key, module.modules_to_save["default"])


def check_plain_lora(name: str, layer) -> None:
    """The packed forward computes B @ A * scaling and nothing else: a PEFT LoRA variant (DoRA's
    magnitude, a LoRA bias, ...) that reached it would train silently as plain LoRA. Planning keeps such
    points apart (Method.pack_refusal); this is the last guard."""
    variant = layer.lora_variant.get("default")
    extra = type(variant).__name__ if variant is not None else "lora_bias" if layer.lora_bias.get("default") else None
    if extra:
        raise ValueError(f"layer {name}: {extra} is no plain LoRA; the packed forward would drop it")


def _slot(base: nn.Module, name: str, kind, ctx: PackContext):
    current = base.get_submodule(name)
    if isinstance(current, kind):
        return current
    if isinstance(current, (MultiLoRALinear, SlicedModules)):
        raise ValueError(f"module {name}: a LoRA target for one point and trained in full for another")
    wrapper = kind(current, ctx)
    _replace(base, name, wrapper)
    return wrapper


def share_frozen_weights(peft_model, shared: dict[str, nn.Parameter]) -> int:
    """Point a point's frozen base weights at the shared base's tensors (`shared`: the base's
    named_parameters taken before any wrapper was attached), so K PEFT models cost one base of
    memory. Each must be equal (same model; same seed for a randomly initialised one).
    Returns the number of tensors shared."""
    count = 0
    for name, param in peft_model.base_model.model.named_parameters():
        if param.requires_grad or LORA_PREFIX in name or "modules_to_save" in name:
            continue
        # PEFT keeps the untouched original of a module trained in full (a head, embeddings): shared
        # when equal; a classification head legitimately differs (its own seed and label count).
        original = ".original_module" in name
        other = shared.get(name.replace(".base_layer", "").replace(".original_module", ""))
        if other is None or other.shape != param.shape or other.dtype != param.dtype:
            continue
        if not torch.equal(param.data.to(other.device), other.data):
            if original:
                continue
            raise ValueError(
                f"frozen weight {name} differs from the pack's base (different seed for a randomly initialised model?)"
            )
        param.data = other.data
        count += 1
    return count
