"""Scoring a trained model: eval loss and accuracy / macro-F1 (classification) or perplexity (lm)."""

from __future__ import annotations

import math

import numpy as np
import torch

from .batches import Encoded, collate
from .runtime import Runtime


@torch.no_grad()
def evaluate(model, enc: Encoded, task: str, pad_id: int, batch_size: int, runtime: Runtime) -> dict[str, float]:
    model.eval()
    total_loss, total_weight, preds = 0.0, 0, []
    for start in range(0, len(enc.input_ids), batch_size):
        rows = range(start, min(start + batch_size, len(enc.input_ids)))
        batch = {k: v.to(runtime.device) for k, v in collate(enc, rows, pad_id, task).items()}
        with runtime.autocast():
            out = model(**batch)
        if task == "lm":
            weight = int((batch["labels"][:, 1:] != -100).sum())
        else:
            weight = len(rows)
            preds.extend(out.logits.argmax(-1).tolist())
        total_loss += float(out.loss) * weight
        total_weight += weight
    model.train()
    eval_loss = total_loss / max(1, total_weight)
    if task == "lm":
        return {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 50.0))}
    return {"eval_loss": eval_loss, **classification_metrics(enc.labels, preds)}


def classification_metrics(labels: list[int], preds: list[int]) -> dict[str, float]:
    y, p = np.asarray(labels), np.asarray(preds)
    f1s = []
    for c in np.unique(y):  # macro-F1 over the classes present in the test split
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(y == p)), "macro_f1": float(np.mean(f1s)), "n_test": int(len(y))}


def add_final_metrics(metrics: dict, final_loss: float, train_enc, eval_enc, num_labels: int, task: str) -> dict:
    metrics["train_loss_final"] = final_loss
    if task != "lm":
        counts = torch.bincount(torch.tensor(train_enc.labels), minlength=num_labels)
        majority = int(counts.argmax())  # the train split's majority class, scored on test
        metrics["majority_accuracy"] = sum(1 for y in eval_enc.labels if y == majority) / len(eval_enc.labels)
    return metrics
