"""What a point that does not fit could change to fit (torch-free): the refusal's one line.

refusal(config, estimate, limit_gb, "train.max_memory_gb=24")
-> '<point>: estimated peak 31.2 GB (...) exceeds train.max_memory_gb=24; would fit: ...'
"""

from __future__ import annotations

import copy
from typing import Any

from ..cli import group_options, option_body
from .estimate import Estimate, estimate_point

GB = 2**30


def label(config: dict[str, Any]) -> str:
    model, method, train = config.get("model") or {}, config["method"], config["train"]
    text = f"{model.get('name')} {method.get('name')}"
    text += f" batch {train.get('batch_size')} x {train.get('max_length')}"
    if train.get("dtype") != "float32":
        text += f" {train.get('dtype')}"
    return text + (" checkpointing" if method.get("gradient_checkpointing") else "")


def refusal(config: dict[str, Any], estimate: Estimate, limit: float, setting: str, name: str = "") -> str:
    """The one line naming the point, its estimate, the limit (`limit` GB, from `setting`: the key and
    value it comes from) and what would fit under it."""
    fitting = would_fit(config, limit * GB)
    hint = f"; would fit: {', '.join(fitting)}" if fitting else "; nothing tried fits (a larger limit?)"
    return f"{name or label(config)}: estimated peak {estimate.summary()} exceeds {setting}{hint} (docs/memory.md)"


def would_fit(config: dict[str, Any], limit: float) -> list[str]:
    """Overrides that bring the estimate under `limit` (bytes): checkpointing, a smaller batch, and
    the other methods of conf/method (each with the point's rank and targets)."""
    found = []
    variants = [("method.gradient_checkpointing=true", _with(config, "method", gradient_checkpointing=True))]
    batch = int(config["train"]["batch_size"])
    while batch > 1:
        batch //= 2
        variants.append((f"train.batch_size={batch}", _with(config, "train", batch_size=batch)))
    for option in group_options("method"):
        body = option_body("method", option)
        if option != config["method"].get("name") and body and body.get("uses_model", True):
            keep = {k: config["method"][k] for k in ("r", "target_modules") if config["method"].get(k) is not None}
            variants.append((f"method={option}", {**config, "method": {**body, **keep}}))
    for override, variant in variants:
        estimate = estimate_point(variant)
        if estimate is not None and estimate.total <= limit:
            found.append((override, estimate.total))
    return _first_of_each(found)


def _with(config: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    changed = copy.copy(config)
    changed[section] = {**config[section], **values}
    return changed


def _first_of_each(found: list[tuple[str, int]]) -> list[str]:
    """Checkpointing, the largest batch that fits, and the three leanest methods: a line, not a list."""
    batches = [f for f in found if f[0].startswith("train.batch_size")][:1]
    methods = sorted((f for f in found if f[0].startswith("method=")), key=lambda f: f[1])[:3]
    chosen = [f for f in found if f[0].startswith("method.")] + batches + methods
    return [f"{override} ({total / GB:.1f} GB)" for override, total in chosen]
