"""What every method is: the `Method` interface, the registry, and the default lr schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...settings import Rule, SettingError
from ..models import Loading

METHODS: dict[str, type[Method]] = {}


class MethodError(ValueError):
    """A method config that cannot work; the message is one line naming the field and value."""


class MethodSettingError(MethodError, SettingError):
    """A method.* value outside its declared rule (Method.SETTINGS)."""


def register(name: str):
    def add(cls):
        if name in METHODS:
            raise ValueError(f"method '{name}' is registered twice ({METHODS[name].__module__}, {cls.__module__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return add


class Method:
    """A way of training one model. Every other stage asks the method what it can do (the facts and
    `*_refusal` hooks below), never its name: a new method declares them here, in its own module."""

    name = "base"
    standalone = False  # True: no torch model; the method's fit_and_score trains and scores (tfidf)
    SETTINGS: dict[str, Rule] = {}  # method.* key -> what it may hold (sweeper.settings), checked first
    # --- what the method can do (class facts; a method whose config changes one overrides the hook)
    saves_adapter = False  # its result is a PEFT adapter (adapter_config.json + weights) on a frozen base
    base_in_4bit = False  # the frozen base is bitsandbytes 4-bit: one process per point (no DDP/FSDP)
    changes_frozen_weights = False  # training writes into frozen weights (ReLoRA's merges): checkpoints keep all
    frozen_base = False  # the base's weights never train nor change: they may load in the training dtype (bf16)

    def __init__(self, cfg, model_cfg, task: str):
        self.cfg, self.model_cfg, self.task = cfg, model_cfg, task

    # ------------------------------------------------------------ capabilities
    def task_refusal(self, task) -> str | None:
        """Why this method cannot train `task` (a sweeper.tasks.Task), or None."""
        return None

    def fsdp_refusal(self) -> str | None:
        """Why train.parallel=fsdp cannot shard this method, or None."""
        return f"method={self.name}"

    @classmethod
    def pack_refusal(cls, method_cfg: dict) -> str | None:
        """Why a point of this method (its resolved method section) cannot share a packed base, or None.
        Only plain LoRA is what the packed forward computes (sweeper.train.pack.layers)."""
        return f"method={cls.name} changes the base or trains no LoRA adapter"

    # ------------------------------------------------------------ loading and training hooks
    def loading(self, runtime) -> Loading:
        """How the base's weights load: bfloat16 when the point computes in it and the base stays
        frozen (weights that train keep float32 masters); else float32. (QLoRA: 4-bit while loading.)"""
        return Loading(dtype=torch.bfloat16 if runtime.bf16 and self.frozen_base else torch.float32)

    def prepare_base(self, model: nn.Module) -> nn.Module:
        """Before `wrap`: method.gradient_checkpointing through transformers' own (its
        `activation_checkpointing_enable`, non-reentrant: the recomputed forward restores the RNG state
        and draws the same dropout masks, so the gradients are the same)."""
        if not self.cfg.get("gradient_checkpointing"):
            return model
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise MethodError(
                f"method.gradient_checkpointing=true: model '{self.model_cfg.name}' "
                f"({type(model).__name__}) has no gradient checkpointing; set it to false"
            )
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def prepare_shared_base(self, base: nn.Module) -> None:
        """Packing: make the frozen base every member of a pack shares (e.g. quantise it)."""

    def make_optimizer(self, model: nn.Module, params: list[nn.Parameter], lr: float, weight_decay: float):
        """AdamW over `params`. A method with its own parameter groups (LoRA+) sets each group's
        `lr_ratio`: the loop's schedule sets group lr = train.lr * scale * lr_ratio."""
        import torch

        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    def before_zero_grad(self, step: int, model: nn.Module) -> None:
        """After optimizer.step() of `step`, while the gradients are still there (AdaLoRA's budget)."""

    def save_adapter(self, model: nn.Module, folder, state_dict=None) -> None:
        """Write the PEFT adapter to `folder` (PEFT's format: PeftModel.from_pretrained reloads it)."""
        model.save_pretrained(folder, state_dict=state_dict)

    def adapter_summary(self, model: nn.Module) -> dict[str, Any]:
        """The record's `adapter` section: peft_type and PEFT's resolved config ({} for no PEFT model)."""
        return {}

    def optimizer_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def before_step(self, step: int, model: nn.Module) -> None:
        """Called before the forward pass of `step` (0-based)."""

    def after_step(self, step: int, model: nn.Module, optimizer) -> list[dict[str, Any]]:
        """Called after optimizer.step() of `step`; returns events to log (e.g. a ReLoRA merge)."""
        return []

    def lr_scale(self, step: int, train_cfg) -> float:
        """Multiplier on train.lr at `step`: linear warmup, then cosine decay to min_lr_ratio."""
        return warmup_cosine(step, train_cfg.warmup_steps, train_cfg.max_steps, train_cfg.min_lr_ratio)

    def state_dict(self) -> dict[str, Any]:
        """Method state that a checkpoint must keep (counters; not tensors)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        """Method-specific numbers for the record's `train` section."""
        return {}


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
