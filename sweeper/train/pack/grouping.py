"""Which points may share a pack: the same base, task, method family and runtime settings."""

from __future__ import annotations

import json
import sys

from omegaconf import DictConfig, OmegaConf

from ... import tasks

# Keys that may differ between the points of one pack; every other key of `method` / `train` must match.
PER_POINT_METHOD_KEYS = {"r", "alpha", "dropout", "lr", "target_modules", "use_rslora"}
PER_POINT_TRAIN_KEYS = {
    "lr",
    "max_steps",
    "batch_size",
    "warmup_steps",
    "min_lr_ratio",
    "weight_decay",
    "grad_clip",
    "seed",
    "log_every",
    "eval_size",
    "truncation",
    "eval_batch_size",
    "checkpoint_every",
    "save_adapter",
    "save_weights",
}


# ---------------------------------------------------------------- grouping
def pack_refusal(cfg: DictConfig) -> str | None:
    """Why the point's method cannot share a packed base (the method says; None: it can)."""
    from ..methods import METHODS

    method = OmegaConf.to_container(cfg.method, resolve=True)
    kind = METHODS.get(method.get("name"))
    return "unknown method" if kind is None else kind.pack_refusal(method)


def pack_key(cfg: DictConfig) -> str | None:
    """What points of one pack share, as a string; None when the point cannot be packed at all."""
    try:
        model = OmegaConf.to_container(cfg.model, resolve=True)
        method = OmegaConf.to_container(cfg.method, resolve=True)
        train = OmegaConf.to_container(cfg.train, resolve=True)
        task = tasks.get(cfg.dataset.task)
    except Exception:  # noqa: BLE001  an unresolvable config (or task) runs alone (and fails there with its record)
        return None
    if not task.packable:
        return None  # decoding (model.generate) runs one model at a time: docs/packing.md
    if train.get("stop_at") is not None:
        return None  # a halving rung pauses the point on its own schedule: it trains alone
    if pack_refusal(cfg):
        return None  # the method says why (relora and full change the base, DoRA is no plain LoRA, ...)
    if model.get("arch") == "lstm" or model.get("lora_target_parameters"):
        return None  # LoRA on target_parameters (LSTM weights) is not an nn.Linear delta
    if train.get("eval_every"):
        return None  # early stopping keeps one model's best state: it trains alone
    if method.get("gradient_checkpointing"):
        return None  # recomputation restores the global RNG, not each adapter's dropout generator
    shared_train = {k: v for k, v in train.items() if k not in PER_POINT_TRAIN_KEYS}
    if model.get("source") == "config":
        shared_train["seed"] = train.get("seed")  # a randomly initialised base depends on the seed
    shared_method = {k: v for k, v in method.items() if k not in PER_POINT_METHOD_KEYS}
    if method.get("quantize") == "targets":
        shared_method["target_modules"] = method.get("target_modules")  # they decide which base layers are 4-bit
    return json.dumps([task.name, model, shared_method, shared_train], sort_keys=True, default=str)


def can_pack(cfg_a: DictConfig, cfg_b: DictConfig) -> bool:
    key = pack_key(cfg_a)
    return key is not None and key == pack_key(cfg_b)


def unpackable(cfgs: list[DictConfig]) -> dict[str, int]:
    """{reason: points} of the points that train alone because their task or method never packs."""
    counts: dict[str, int] = {}
    for cfg in cfgs:
        name = OmegaConf.select(cfg, "dataset.task", default=None, throw_on_resolution_failure=False)
        if name in tasks.names() and not tasks.get(name).packable:
            reason = f"task {name} is not packable"
        else:
            try:
                reason = pack_refusal(cfg)
            except Exception:  # noqa: BLE001  an unresolvable config runs alone and fails there
                reason = None
        if reason:
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def group_points(cfgs: list[DictConfig], size: int) -> list[list[int]]:
    """Indices of `cfgs` in groups of at most `size` packable points (first come, first placed);
    an unpackable point is a group of one. Order within and across groups follows `cfgs`."""
    groups: list[list[int]] = []
    open_groups: dict[str, list[int]] = {}
    if size > 1:
        for reason, n in unpackable(cfgs).items():  # one line per reason: the request is refused, the points run
            print(f"sweeper.pack={size}: {n} point(s) train alone: {reason} (docs/packing.md)", file=sys.stderr)
    for i, cfg in enumerate(cfgs):
        key = pack_key(cfg)
        if key is None or size <= 1:
            groups.append([i])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(i)
    return groups
