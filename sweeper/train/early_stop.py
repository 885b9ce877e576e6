"""Early stopping on the validation split: `train.eval_every` steps between validation scores (and
the last step), `train.early_stopping` scores without improvement before training stops (0: never
stop, but still keep the best step). The model scored on test is the best validation step's.

The best weights (what a checkpoint keeps: the trainable parameters, all weights for ReLoRA) are
copied to the CPU at each improvement; checkpoints carry them and the counters, so a resumed run
ends as an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import sharding
from .errors import TrainingError


class BestStep:
    def __init__(self, score: Callable[[Any], float], higher_is_better: bool, eval_every: int, patience: int):
        self.score, self.higher, self.eval_every, self.patience = score, higher_is_better, eval_every, patience
        self.best_step, self.best_score, self.bad = None, None, 0
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.snapshot: Callable[[], dict[str, torch.Tensor]] | None = None  # set by the loop

    def after_step(self, done: int, model, last: bool) -> tuple[list[dict[str, Any]], bool]:
        """(events to log, whether to stop) after optimizer step `done`; the last step is always scored."""
        if done % self.eval_every and not last:
            return [], False
        value = float(self.score(model))
        improved = self.best_score is None or (value > self.best_score if self.higher else value < self.best_score)
        if improved:
            self.best_step, self.best_score, self.bad = done, value, 0
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.snapshot().items()}
        else:
            self.bad += 1
        stop = bool(self.patience) and self.bad >= self.patience
        return [{"event": "validation", "score": round(value, 6), "best_step": self.best_step}], stop

    def restore(self, model) -> None:
        """Load the best validation step's weights back (nothing to do if none was scored)."""
        if self.best_weights is None:
            return
        if sharding.is_sharded(model):  # rank 0 holds the full best weights ({} elsewhere): into every shard
            sharding.load_weights(model, self.best_weights, from_rank0=True)
        else:
            model.load_state_dict(self.best_weights, strict=False)

    # checkpoints (sweeper.train.checkpoint): counters in trainer.pt, weights beside them
    def state_dict(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_score": self.best_score, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None) -> None:
        self.best_step, self.best_score, self.bad = state["best_step"], state["best_score"], state["bad"]
        self.best_weights = weights

    def summary(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_validation": self.best_score}


def best_step_watch(train_cfg, task, score_validation: Callable[[Any], dict]) -> BestStep | None:
    """The watcher for train.eval_every > 0 (None otherwise), on the task's validation score
    (task.early_stop_metric: accuracy, micro-F1, the loss for lm, chrF of greedy outputs)."""
    eval_every, patience = watch_settings(train_cfg)
    if eval_every <= 0:
        return None
    metric = task.early_stop_metric
    return BestStep(lambda model: score_validation(model)[metric], task.early_stop_higher, eval_every, patience)


def watch_settings(train_cfg) -> tuple[int, int]:
    """(train.eval_every, train.early_stopping); a one-line TrainingError for patience without scores.
    (Checked before a distributed point starts its ranks, so that all fail alike.)"""
    eval_every = int(train_cfg.get("eval_every") or 0)
    patience = int(train_cfg.get("early_stopping") or 0)
    if patience and eval_every <= 0:
        raise TrainingError(f"train.early_stopping={patience} needs train.eval_every > 0 (steps between scores)")
    return eval_every, patience
