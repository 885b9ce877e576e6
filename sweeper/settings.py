"""What each train.* and method.* setting may hold (torch-free), checked before a point loads anything.

    check_values("train", cfg.train, TRAIN_SETTINGS)   # SettingError: one line naming key, value, what is allowed

`train.batch_size=-3` would otherwise train on the whole split minus 3 rows, `train.max_steps=0`
evaluate an untrained model as a result, and `train.dtype=float8` run float32. Each method module
declares the rules of its own keys (`Method.SETTINGS`); the train section's are here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SettingError(ValueError):
    """A setting outside what it may hold; the message names the key, the value and what is allowed,
    and `key` the setting ("train.batch_size"), so the skip rule can tell a corrected command."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Rule:
    """A setting's allowed values: a kind (int, number, choice, names, ngrams, device) and its bounds."""

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False  # low itself not allowed
    open_high: bool = False
    choices: tuple = ()
    nullable: bool = False

    def allowed(self) -> str:
        if self.kind == "choice":
            text = "one of " + ", ".join(_yaml(c).strip("'") for c in self.choices)
        elif self.kind == "names":
            text = "a list of module names"
        elif self.kind == "ngrams":
            text = "[min, max] with 1 <= min <= max"
        elif self.kind == "device":
            text = "auto, cpu, cuda, cuda:N or mps"
        else:
            text = ("an integer" if self.kind == "int" else "a finite number") + self._bounds()
        return text + (" or null" if self.nullable else "")

    def _bounds(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in {'(' if self.open_low else '['}{_num(self.low)}, {_num(self.high)}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f" {'>' if self.open_low else '>='} {_num(self.low)}"
        return ""

    def fits(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if self.kind == "names":
            return isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
        if self.kind == "ngrams":
            pair = list(value) if isinstance(value, (list, tuple)) else []
            return len(pair) == 2 and all(_is_int(v) for v in pair) and 1 <= pair[0] <= pair[1]
        if self.kind == "device":
            return isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is not None
        if not (_is_int(value) if self.kind == "int" else _is_number(value)):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)


def integer(low: int | None = None, nullable: bool = False) -> Rule:
    return Rule("int", low=low, nullable=nullable)


def number(low=None, high=None, *, open_low=False, open_high=False, nullable=False) -> Rule:
    return Rule("number", low, high, open_low, open_high, nullable=nullable)


def choice(*values, nullable: bool = False) -> Rule:
    return Rule("choice", choices=values, nullable=nullable)


POSITIVE = number(0, open_low=True)
FLAG = choice(True, False)
NAMES = Rule("names", nullable=True)  # null: the model's defaults
# The keys every method with a torch model takes (build_method checks them beside the method's own).
EVERY_METHOD_SETTINGS: dict[str, Rule] = {"gradient_checkpointing": FLAG}
NGRAMS = Rule("ngrams")
# The keys every LoRA-based method shares (lora, qlora, relora); each module adds its own.
LORA_SETTINGS: dict[str, Rule] = {
    "lr": POSITIVE,
    "r": integer(1),
    "alpha": POSITIVE,
    "dropout": number(0, 1, open_high=True),
    "target_modules": NAMES,
    "use_rslora": FLAG,
    "warm_start_steps": integer(0),
}

TRAIN_SETTINGS: dict[str, Rule] = {
    "max_steps": integer(0),  # 0: the untrained model evaluated (a zero-shot baseline row)
    "batch_size": integer(1),
    "lr": POSITIVE,
    "weight_decay": number(0),
    "warmup_steps": integer(0),
    "min_lr_ratio": number(0, 1),
    "grad_clip": number(0, nullable=True),  # 0 or null: no clipping
    "max_length": integer(2),
    "truncation": choice("head", "head_tail"),
    "eval_size": integer(1),
    "eval_every": integer(0),
    "early_stopping": integer(0),
    "eval_batch_size": integer(1),
    "log_every": integer(1),
    "seed": integer(0),
    "device": Rule("device"),
    "dtype": choice("float32", "bfloat16"),
    "max_memory_gb": Rule("number", low=0, open_low=True, nullable=True),
    "threads": integer(1, nullable=True),
    "nproc": integer(1),
    "parallel": choice("ddp", "fsdp"),
    "checkpoint_every": integer(0),
    "save_adapter": FLAG,
    "save_weights": choice("auto", True, False),
    "stop_at": integer(1, nullable=True),
}


def check_values(section: str, values: Mapping, rules: Mapping[str, Rule], only=None) -> None:
    """SettingError for the first key of `values` (of `only`, when given) that its rule refuses."""
    for key, rule in rules.items():
        if key not in values or (only is not None and key not in only):
            continue
        value = values[key]
        if not rule.fits(value):
            raise SettingError(f"{section}.{key} must be {rule.allowed()}, got {_yaml(value)}", f"{section}.{key}")


def _is_int(value: Any) -> bool:
    """An int, or an integral float (a YAML 16.0 and a CLI 16 are one setting, as in the run id)."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _yaml(value: Any) -> str:
    """A value as it is written on the command line (true, null, 'text')."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)
