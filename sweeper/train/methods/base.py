"""What every method is: the `Method` interface, the registry, and the default lr schedule."""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from ...settings import Rule, SettingError

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
    name = "base"
    standalone = False  # True: no torch model; the method's fit_and_score trains and scores (tfidf)
    SETTINGS: dict[str, Rule] = {}  # method.* key -> what it may hold (sweeper.settings), checked first

    def __init__(self, cfg, model_cfg, task: str):
        self.cfg, self.model_cfg, self.task = cfg, model_cfg, task

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

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

    def is_peft(self) -> bool:
        return False


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
