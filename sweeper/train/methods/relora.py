"""ReLoRA (Lialin et al., ICLR 2024): high-rank training through a sequence of low-rank updates.

    full-rank warm start  ->  LoRA for `merge_every` steps  ->  merge W += s*B@A, re-init A (Kaiming) and
    B (0), prune the LoRA optimizer state, restart the LR (0, then a short linear warmup)  ->  LoRA ...

Built on the LoRA method (same PEFT wrapping, same warm-start phase switch); what ReLoRA adds lives here:
- `merge_and_reinit`: a merge by hand, so the optimizer keeps its parameter objects and PEFT's `merged`
  flag is never set (with the flag set, re-initialised adapters would be silently ignored in forward).
- `reset_optimizer_state`: only the LoRA entries of Adam's state are pruned, with ONE mask taken from
  |exp_avg_sq| and applied to both moments. Separate masks (as the reference code does) leave entries
  with a large exp_avg over a near-zero exp_avg_sq, and the first update after a restart explodes.
- `jagged_scale`: one global warmup + cosine envelope over train.max_steps; at the switch from the warm
  start and after every merge the LR drops to 0 and warms linearly back onto the envelope (times
  `lr_multiplier` in the ReLoRA phase).
Merges change frozen weights, so checkpoints hold the whole state_dict (`changes_frozen_weights`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...settings import LORA_SETTINGS, POSITIVE, choice, integer, number
from .base import MethodError, register, warmup_cosine
from .lora import LORA_PREFIX, LoRA, lora_layers

RESET_MODES = ("magnitude", "random", "full")
ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")


# ---------------------------------------------------------------- config
def _int_at_least(cfg, key: str, low: int) -> int:
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise MethodError(f"method.{key} must be an integer >= {low}, got {value!r}")
    return value


def check_relora_config(cfg) -> dict[str, Any]:
    """The ReLoRA knobs as plain values, or a one-line MethodError naming the field."""
    merge_every = _int_at_least(cfg, "merge_every", 1)
    knobs = {
        "warm_start_steps": _int_at_least(cfg, "warm_start_steps", 0),
        "merge_every": merge_every,
        "restart_warmup_steps": (
            min(max(1, merge_every // 10), merge_every - 1)  # null: a tenth of the cycle (paper: 50-100 of 5,000)
            if cfg.restart_warmup_steps is None
            else _int_at_least(cfg, "restart_warmup_steps", 0)
        ),
        "optimizer_reset": cfg.optimizer_reset,
        "prune_ratio": cfg.prune_ratio,
        "lr_multiplier": cfg.lr_multiplier,
    }
    if knobs["restart_warmup_steps"] >= knobs["merge_every"]:
        raise MethodError(
            f"method.restart_warmup_steps must be < method.merge_every ({knobs['merge_every']}), "
            f"got {knobs['restart_warmup_steps']}"
        )
    if knobs["optimizer_reset"] not in RESET_MODES:
        raise MethodError(
            f"method.optimizer_reset must be one of {', '.join(RESET_MODES)}, got {knobs['optimizer_reset']!r}"
        )
    ratio = knobs["prune_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise MethodError(
            f"method.prune_ratio must be in [0, 1] (fraction of LoRA optimizer state zeroed), got {ratio!r}"
        )
    mult = knobs["lr_multiplier"]
    if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not (math.isfinite(mult) and mult > 0):
        raise MethodError(f"method.lr_multiplier must be a number > 0, got {mult!r}")
    knobs["prune_ratio"], knobs["lr_multiplier"] = float(ratio), float(mult)
    return knobs


# ---------------------------------------------------------------- schedule
def restart_at_or_before(step: int, warm_start: int, merge_every: int) -> int | None:
    """The last restart step <= `step`, or None. Restarts: the first LoRA step after a warm start
    (warm_start > 0) and the first step after each merge (warm_start + k * merge_every, k >= 1)."""
    if step < warm_start:
        return None
    last = warm_start + (step - warm_start) // merge_every * merge_every
    return None if last == 0 else last  # no warm start and no merge yet: the run's own first warmup


def jagged_scale(
    step: int,
    *,
    warm_start: int,
    merge_every: int,
    restart_warmup: int,
    lr_multiplier: float,
    warmup: int,
    total: int,
    min_ratio: float,
) -> float:
    """Multiplier on train.lr at `step` (0-based); see the module docstring for the shape."""
    envelope = lambda s: warmup_cosine(s, warmup, total, min_ratio)  # noqa: E731
    if step < warm_start:
        return envelope(step)  # full-rank phase: the plain schedule, no multiplier
    restart = restart_at_or_before(step, warm_start, merge_every)
    if restart is not None and step - restart < restart_warmup:
        # From 0 at the restart, linearly up to where the envelope will be when the warmup ends
        # (the reference code's shape), so the curve rejoins the cosine without a jump.
        return lr_multiplier * (step - restart) / restart_warmup * envelope(restart + restart_warmup)
    return lr_multiplier * envelope(step)


# ---------------------------------------------------------------- merge
def _base_weight(layer) -> nn.Parameter:
    # ParamWrapper (target_parameters, e.g. LSTM weights) adapts a named parameter; Linear its .weight.
    return layer.get_param() if hasattr(layer, "get_param") else layer.get_base_layer().weight


@torch.no_grad()
def merge_and_reinit(model: nn.Module) -> float:
    """W += scale * B @ A for every LoRA layer, then A <- Kaiming-uniform, B <- 0, all in place.
    Returns the Frobenius norm of the merged update (all layers together), for the log."""
    sq = 0.0
    for layer in lora_layers(model):
        if layer.merged:
            raise RuntimeError("ReLoRA found a LoRA layer flagged as merged; its adapter would be ignored in forward")
        for adapter in list(layer.lora_A.keys()):
            delta = layer.get_delta_weight(adapter)
            weight = _base_weight(layer)
            weight.data += delta.to(weight.dtype)
            sq += float(delta.float().pow(2).sum())
            layer.reset_lora_parameters(adapter, True)  # True: Kaiming-uniform A (a=sqrt(5)), zero B
    return math.sqrt(sq)


# ---------------------------------------------------------------- optimizer reset
def _keep_mask(exp_avg_sq: torch.Tensor, mode: str, ratio: float) -> torch.Tensor:
    """Which entries survive: the largest (1 - ratio) by |exp_avg_sq|, a random (1 - ratio), or none."""
    flat = exp_avg_sq.detach().abs().flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    n_keep = int(round(flat.numel() * (1.0 - ratio))) if mode != "full" else 0
    if n_keep <= 0:
        return keep.view_as(exp_avg_sq)
    if mode == "magnitude":
        # topk instead of torch.quantile: exact count, and no size limit on big layers.
        keep[torch.topk(flat.float(), n_keep, sorted=False).indices] = True
    else:  # random
        keep[torch.randperm(flat.numel(), device=flat.device)[:n_keep]] = True
    return keep.view_as(exp_avg_sq)


@torch.no_grad()
def reset_optimizer_state(optimizer, params: list[nn.Parameter], mode: str, ratio: float) -> float:
    """Prune Adam's moments of `params` (the LoRA parameters) in place; every other entry is untouched.
    One mask per tensor, from |exp_avg_sq|, applied to both moments (see the module docstring).
    Adam's `step` count is kept, as in the reference code, except for `full`: the state is dropped,
    so the next step is a fresh AdamW's first (step 1, bias correction included). Returns the
    fraction of entries kept."""
    if mode == "full":
        for p in params:
            optimizer.state.pop(p, None)
        return 0.0
    kept = total = 0
    for p in params:
        state = optimizer.state.get(p)
        if not state or not all(k in state for k in ADAM_MOMENTS):
            continue  # no state yet (e.g. never had a gradient): nothing to prune
        mask = _keep_mask(state["exp_avg_sq"], mode, ratio)
        for key in ADAM_MOMENTS:
            state[key].mul_(mask.to(state[key].dtype))
        kept += int(mask.sum())
        total += mask.numel()
    return kept / total if total else 0.0


# ---------------------------------------------------------------- the method
@register("relora")
class ReLoRA(LoRA):
    SETTINGS = {
        **LORA_SETTINGS,
        "merge_every": integer(1),
        "restart_warmup_steps": integer(0, nullable=True),
        "optimizer_reset": choice(*RESET_MODES),
        "prune_ratio": number(0, 1),
        "lr_multiplier": POSITIVE,
    }
    changes_frozen_weights = True  # merges write into the base weights: checkpoints keep them all

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)  # LoRA checks r/alpha/dropout and reads warm_start_steps
        knobs = check_relora_config(cfg)
        self.merge_every = knobs["merge_every"]
        self.restart_warmup_steps = knobs["restart_warmup_steps"]
        self.optimizer_reset = knobs["optimizer_reset"]
        self.prune_ratio = knobs["prune_ratio"]
        self.lr_multiplier = knobs["lr_multiplier"]
        self.merges = 0
        self._schedule_args: dict[str, Any] | None = None  # filled on the first lr_scale call
        # A saved PEFT adapter would be wrong for ReLoRA: the merges live in the base weights.
        self.saves_adapter = False
        self.frozen_base = False  # merges write into it: bfloat16 weights would round every merge
        if self.variant:  # merge_and_reinit merges B @ A by hand: plain LoRA's delta only
            raise MethodError(
                f"method=relora merges plain LoRA by hand; method.config ({', '.join(sorted(self.variant))}) "
                "is not supported"
            )

    def fsdp_refusal(self):
        return "method=relora (merges into sharded weights)"

    @classmethod
    def pack_refusal(cls, method_cfg):
        return "method=relora merges into the base"

    def wrap(self, model):
        model = super().wrap(model)
        # The record's params.trainable is counted right after wrap, i.e. in the warm start when there
        # is one; this is the count of the ReLoRA phase (LoRA factors + full-rank modules_to_save).
        self.low_rank_trainable = sum(
            p.numel() for n, p in model.named_parameters() if LORA_PREFIX in n or "modules_to_save" in n
        )
        return model

    def is_merge_step(self, done: int, max_steps: int) -> bool:
        """Merge after optimizer step number `done` (1-based)? Not at the very end: no restart follows."""
        past_warm = done - self.warm_start_steps
        return past_warm > 0 and past_warm % self.merge_every == 0 and done < max_steps

    def lr_scale(self, step, train_cfg):
        if self._schedule_args is None:
            self._schedule_args = dict(
                warm_start=self.warm_start_steps,
                merge_every=self.merge_every,
                restart_warmup=self.restart_warmup_steps,
                lr_multiplier=self.lr_multiplier,
                warmup=int(train_cfg.warmup_steps),
                total=int(train_cfg.max_steps),
                min_ratio=float(train_cfg.min_lr_ratio),
            )
            self._base_lr, self._max_steps = float(train_cfg.lr), int(train_cfg.max_steps)
        return jagged_scale(step, **self._schedule_args)

    def after_step(self, step, model, optimizer):
        super().after_step(step, model, optimizer)  # the end of a warm start frees the base's Adam state
        done = step + 1
        if self._schedule_args is None or not self.is_merge_step(done, self._max_steps):
            return []
        delta_norm = merge_and_reinit(model)
        kept = reset_optimizer_state(optimizer, self._lora_params, self.optimizer_reset, self.prune_ratio)
        self.merges += 1
        return [
            {
                "event": "merge",
                "merge": self.merges,
                "delta_norm": round(delta_norm, 6),
                "optimizer_kept_fraction": round(kept, 6),
            }
        ]

    def state_dict(self):
        return {"merges": self.merges}

    def load_state_dict(self, state):
        self.merges = int(state.get("merges", 0))

    def summary(self):
        out = {
            "merges": self.merges,
            "warm_start_steps": self.warm_start_steps,
            "merge_every": self.merge_every,
            "restart_warmup_steps": self.restart_warmup_steps,
            "optimizer_reset": self.optimizer_reset,
            "prune_ratio": self.prune_ratio,
            "lr_multiplier": self.lr_multiplier,
            "low_rank_trainable": getattr(self, "low_rank_trainable", None),
        }
        if self._schedule_args is not None:
            # The LR of every step (4 significant digits): metrics.jsonl logs it only every
            # train.log_every steps, too coarse to see restart warmups of a few steps.
            scales = (jagged_scale(s, **self._schedule_args) for s in range(self._max_steps))
            out["lr_schedule"] = [float(f"{self._base_lr * x:.4g}") for x in scales]
        return out
