"""multilabel: any number of labels of a fixed set per text (a package's Debtags of one facet).

A sigmoid per label, trained with binary cross-entropy (transformers' problem_type
"multi_label_classification" for encoders and causal LMs, the same loss for the LSTM and packed
views); a label is predicted when its probability exceeds 0.5 (fixed, not tuned on validation: a
threshold tuned there would make the validation score that selects configurations optimistic).
Headline metric: micro-F1 over every (text, label) pair; macro-F1, subset accuracy and each label's
F1 beside it; the report's paired t-test on each test row's F1 of its label set.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .base import TextClassifier, register

THRESHOLD = 0.5


@register
class MultiLabel(TextClassifier):
    name = "multilabel"
    description = "a set of labels per text (`label_field` joined by `label_sep`), from a fixed set"
    position = 3
    primary = "micro_f1"
    early_stop_metric = "micro_f1"
    metrics = ("micro_f1", "macro_f1", "subset_accuracy")
    # classical (TextClassifier): method=tfidf as one-vs-rest logistic regressions
    row_score = "f1"

    # ------------------------------------------------------------ data
    def check_spec(self, spec: dict) -> dict:
        from ..data.spec import DatasetError

        name = spec["name"]
        spec.setdefault("text_field", "text")
        spec.setdefault("label_field", "labels")
        spec.setdefault("label_sep", ";")
        spec.setdefault("min_count", 2)
        spec.setdefault("allow_empty", False)
        spec.setdefault("balance", False)
        if spec["balance"]:
            raise DatasetError(name, "balance does not apply to multilabel (a row holds several labels); remove it")
        sep = spec["label_sep"]
        if not isinstance(sep, str) or not sep:
            raise DatasetError(name, f"label_sep must be a non-empty text, got {sep!r}")
        labels = spec.get("labels")
        if labels is not None and (not isinstance(labels, list) or len(set(map(str, labels))) < 2):
            raise DatasetError(
                name, f"labels must list at least two labels (one label is classification), got {labels!r}"
            )
        if not isinstance(spec["allow_empty"], bool):
            raise DatasetError(name, f"allow_empty must be true or false, got {spec['allow_empty']!r}")
        return spec

    def build_frames(self, name: str, spec: dict, given: dict) -> tuple[dict, dict]:
        from ..data.build import check_splits, dropped_rows, select_rows
        from ..data.labelsets import check_multilabel_splits, label_sets, multilabel_frames

        given = {s: select_rows(name, spec, df, label_sets) for s, df in given.items()}
        frames, label_names = multilabel_frames(name, spec, given)
        check_splits(name, frames, None)  # no split is empty
        check_multilabel_splits(name, frames, label_names)
        return frames, {"label_names": label_names, "dropped": dropped_rows(given)}

    def features(self, meta: dict) -> dict:
        import datasets

        return {
            "text": datasets.Value("string"),
            "label": datasets.Sequence(datasets.ClassLabel(names=meta["label_names"])),
        }

    def num_labels(self, splits) -> int:
        return splits["train"].features["label"].feature.num_classes

    def plain_labels(self, split) -> tuple[list, list[str] | None]:
        """Each row's labels as 0/1 per label (what BCE and the metrics read), and the label names."""
        names = split.features["label"].feature.names
        return [multi_hot(row, len(names)) for row in split["label"]], names

    # ------------------------------------------------------------ model
    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        return {"num_labels": num_labels, "problem_type": "multi_label_classification"}

    def head_loss(self, logits, labels):
        """Mean binary cross-entropy over every (row, label); a packed view's labels may be wider."""
        from torch.nn import functional

        return functional.binary_cross_entropy_with_logits(logits.float(), labels[:, : logits.shape[-1]].float())

    # ------------------------------------------------------------ token ids and batches
    def batch_labels(self, enc, rows, ids, mask):
        import torch

        return torch.tensor([enc.labels[i] for i in rows], dtype=torch.float32)

    # ------------------------------------------------------------ evaluation
    def predict_batch(self, model, out, batch, enc, rows, pad_id: int, runtime) -> tuple[int, list]:
        return len(rows), (out.logits.float() > 0).int().tolist()  # sigmoid > 0.5

    def split_metrics(self, loss: float, enc, preds: list, num_labels: int) -> dict[str, Any]:
        return {"loss": loss, **multilabel_metrics(enc.labels, preds, enc.label_names)}

    def score_line(self, metrics: dict) -> str:
        validation = metrics.get("validation") or {}
        val = f"val {validation['micro_f1']:.3f}, " if validation else ""
        return (
            f"test micro-F1 {metrics['micro_f1']:.3f} ({val}macro-F1 {metrics['macro_f1']:.3f}, "
            f"subset acc {metrics['subset_accuracy']:.3f})"
        )

    def save_predictions(self, run_dir, enc, preds: list) -> None:
        """Row i of the test split: its labels and the predicted ones (JSON lists of names), and the
        row's F1 of its label set (1 when both are empty), which the report's paired test reads."""
        import pandas as pd

        from ..files import run_folder, write_file
        from ..records import PREDICTIONS_NAME

        names = enc.label_names
        frame = pd.DataFrame({
            "row": np.arange(len(enc.labels), dtype="int32"),
            "label": [json.dumps(label_set(row, names)) for row in enc.labels],
            "pred": [json.dumps(label_set(row, names)) for row in preds],
            "f1": row_f1(np.asarray(enc.labels, dtype=bool), np.asarray(preds, dtype=bool)),
        })  # fmt: skip
        write_file(run_folder(run_dir) / PREDICTIONS_NAME, lambda tmp: frame.to_parquet(tmp, index=False))

    # ------------------------------------------------------------ method=tfidf
    def classical_fit(self, pipeline, texts: list[str], labels: list):
        """One logistic regression per label (one-vs-rest) on the pipeline's features."""
        from sklearn.multiclass import OneVsRestClassifier

        step, classifier = pipeline.steps[-1]
        pipeline.steps[-1] = (step, OneVsRestClassifier(classifier))
        return pipeline.fit(texts, np.asarray(labels, dtype=int))

    def classical_score(self, model, texts: list[str], labels: list, names: list[str]) -> tuple[dict, list]:
        probs = np.clip(model.predict_proba(texts), 1e-12, 1 - 1e-12)
        truth = np.asarray(labels, dtype=float)
        loss = float(-np.mean(truth * np.log(probs) + (1 - truth) * np.log(1 - probs)))
        preds = (probs > THRESHOLD).astype(int).tolist()
        return {"loss": loss, **multilabel_metrics(labels, preds, names)}, preds


def multi_hot(indices, width: int) -> list[int]:
    row = [0] * width
    for i in indices:
        row[i] = 1
    return row


def label_set(row, names: list[str] | None) -> list:
    return [names[i] if names else i for i, on in enumerate(row) if on]


def row_f1(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each row's F1 of its predicted label set against the true one (1 when both are empty)."""
    both = (truth & pred).sum(axis=1)
    total = truth.sum(axis=1) + pred.sum(axis=1)
    return np.where(total == 0, 1.0, 2 * both / np.maximum(total, 1))


def multilabel_metrics(labels: list, preds: list, names: list[str] | None) -> dict[str, Any]:
    """micro-F1 (every (row, label) pair counted once), macro-F1 (the labels' mean F1; a label never
    true nor predicted scores 0, as in classification), subset accuracy (the whole set right), and
    each label's F1 (by name when the names are known)."""
    y = np.asarray(labels, dtype=bool).reshape(len(labels), -1)
    p = np.asarray(preds, dtype=bool).reshape(len(preds), -1)
    tp, fp, fn = (y & p).sum(axis=0), (~y & p).sum(axis=0), (y & ~p).sum(axis=0)
    denominator = 2 * tp + fp + fn
    per_label = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    micro = 2 * tp.sum() / max(1, 2 * tp.sum() + fp.sum() + fn.sum())
    keys = names if names else [str(i) for i in range(y.shape[1])]
    return {
        "micro_f1": float(micro),
        "macro_f1": float(per_label.mean()) if per_label.size else 0.0,
        "subset_accuracy": float((y == p).all(axis=1).mean()) if len(y) else 0.0,
        "per_label_f1": {k: float(f) for k, f in zip(keys, per_label)},
        "n": int(len(y)),
    }
