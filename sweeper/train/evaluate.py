"""Scoring a trained model on validation and test: loss and accuracy / macro-F1 (classification)
or perplexity (lm), plus the test predictions that the report's paired significance tests read.

    scores, test_predictions = evaluate_splits(model, evals, task, pad_id, batch_size, runtime, num_labels)
    metrics = record_metrics(scores, final_loss, train_labels, evals, task, num_labels)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..records import PREDICTIONS_NAME
from .batches import Encoded, collate
from .runtime import Runtime

EVAL_SPLITS = ("validation", "test")


@torch.no_grad()
def predict(model, enc: Encoded, task: str, pad_id: int, batch_size: int, runtime: Runtime):
    """(mean loss, predicted labels) over the split; lm weighs the loss by predicted tokens."""
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
    return total_loss / max(1, total_weight), preds


def evaluate(
    model, enc: Encoded, task: str, pad_id: int, batch_size: int, runtime: Runtime, num_labels: int = 0
) -> dict[str, float]:
    """Scores of one split: {loss, perplexity, n} (lm) or {loss, accuracy, macro_f1, n}."""
    loss, preds = predict(model, enc, task, pad_id, batch_size, runtime)
    return split_metrics(loss, enc, preds, task, num_labels)


def split_metrics(loss: float, enc: Encoded, preds: list[int], task: str, num_labels: int) -> dict[str, float]:
    if task == "lm":
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "n": len(enc.input_ids)}
    labels = range(num_labels) if num_labels else sorted(set(enc.labels) | set(preds))
    return {"loss": loss, **classification_metrics(enc.labels, preds, labels)}


def evaluate_splits(model, evals: dict[str, Encoded], task, pad_id, batch_size, runtime, num_labels):
    """({split: scores} for validation and test, the test predictions)."""
    scores, preds = {}, {}
    for split in EVAL_SPLITS:
        loss, preds[split] = predict(model, evals[split], task, pad_id, batch_size, runtime)
        scores[split] = split_metrics(loss, evals[split], preds[split], task, num_labels)
    return scores, preds["test"]


def classification_metrics(labels: list[int], preds: list[int], classes) -> dict[str, float]:
    """Accuracy and macro-F1 over `classes` (every label of the dataset, as sklearn's
    f1_score(average="macro", labels=classes)): a class never true nor predicted scores 0."""
    y, p = np.asarray(labels), np.asarray(preds)
    f1s = []
    for c in classes:
        tp = np.sum((p == c) & (y == c))
        denom = np.sum(p == c) + np.sum(y == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(y == p)), "macro_f1": float(np.mean(f1s)), "n": int(len(y))}


def majority_class(train_labels: list[int], num_labels: int) -> int:
    """The train split's most frequent label (the majority baseline always answers it)."""
    return int(np.bincount(np.asarray(train_labels), minlength=num_labels).argmax())


def record_metrics(
    scores: dict, final_loss: float | None, train_labels, evals: dict[str, Encoded], task: str, num_labels: int
):
    """The record's `metrics` (schema 2): `validation` and `test` sections, and the test scores also
    at the top level under their schema-1 names (accuracy, macro_f1, eval_loss, perplexity, n_test).
    final_loss: the last training loss (None for a method without a loss curve, tfidf)."""
    if task != "lm":
        majority = majority_class(train_labels, num_labels)
        for split in EVAL_SPLITS:
            labels = evals[split].labels
            scores[split]["majority_accuracy"] = sum(y == majority for y in labels) / max(1, len(labels))
        scores["test"]["majority_class"] = majority
    test = scores["test"]
    legacy = {"eval_loss": test["loss"], "n_test": test["n"]}
    kept = ("accuracy", "macro_f1", "perplexity", "majority_accuracy", "majority_class")
    legacy.update({k: v for k, v in test.items() if k in kept})
    return {**scores, **legacy, "train_loss_final": final_loss}


def save_predictions(run_dir: Path, labels: list[int], preds: list[int]) -> None:
    """The test predictions beside the record (row i of the test split, its label, the prediction)."""
    import pandas as pd

    frame = pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "pred": preds}).astype("int32")
    path = Path(run_dir) / PREDICTIONS_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
