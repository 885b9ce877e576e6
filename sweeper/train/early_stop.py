"""Early stopping on the validation split: `train.eval_every` steps between validation scores,
`train.early_stopping` evaluations without improvement before training stops (0: never stop,
but still keep the best step). The model scored on test is the best validation step's.

The best state is kept in memory (a copy of the model's state dict, taken at each improvement):
a run resumed from a checkpoint tracks the best from the resumed step on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class BestStep:
    def __init__(self, score: Callable[[Any], float], higher_is_better: bool, eval_every: int, patience: int):
        self.score, self.higher, self.eval_every, self.patience = score, higher_is_better, eval_every, patience
        self.best_step, self.best_score, self.best_state, self.bad = None, None, None, 0

    def after_step(self, done: int, model) -> tuple[list[dict[str, Any]], bool]:
        """(events to log, whether to stop) after optimizer step `done`."""
        if done % self.eval_every:
            return [], False
        value = float(self.score(model))
        improved = self.best_score is None or (value > self.best_score if self.higher else value < self.best_score)
        if improved:
            self.best_step, self.best_score, self.bad = done, value, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad += 1
        stop = bool(self.patience) and self.bad >= self.patience
        return [{"event": "validation", "score": round(value, 6), "best_step": self.best_step}], stop

    def restore(self, model) -> None:
        """Load the best validation step's weights back (nothing to do if none was scored)."""
        if self.best_state is not None:
            with torch.no_grad():
                model.load_state_dict(self.best_state)

    def summary(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_validation": self.best_score}


def best_step_watch(train_cfg, task: str, score_validation: Callable[[Any], dict]) -> BestStep | None:
    """The watcher for train.eval_every > 0 (None otherwise): accuracy for classification, the
    validation loss for lm."""
    eval_every = int(train_cfg.get("eval_every") or 0)
    if eval_every <= 0:
        return None
    metric = "loss" if task == "lm" else "accuracy"
    patience = int(train_cfg.get("early_stopping") or 0)
    return BestStep(lambda model: score_validation(model)[metric], metric != "loss", eval_every, patience)
