"""classification: one label of a fixed set per text. Headline metric: accuracy; macro-F1 beside it;
the majority class and method=tfidf as baselines; McNemar's test on the test predictions."""

from __future__ import annotations

from typing import Any

from .base import TextClassifier, register

RULES = ("multiclass", "one_vs_rest", "pair", "subset")


@register
class Classification(TextClassifier):
    name = "classification"
    description = "one label per text (`label_field`), from a fixed set"
    position = 0
    primary = "accuracy"
    early_stop_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "majority_accuracy")
    test_metrics = ("majority_class",)
    majority_baseline = True

    pivot_file = "pivot.csv"  # the names these files had before there were other tasks
    heatmap_file = "heatmap.png"

    # ------------------------------------------------------------ data
    def check_spec(self, spec: dict) -> dict:
        from ..data.spec import DatasetError

        name = spec["name"]
        spec.setdefault("text_field", "text")
        spec.setdefault("label_field", "label")
        spec.setdefault("rule", "multiclass")
        spec.setdefault("min_count", 2)
        spec.setdefault("balance", False)
        if spec["rule"] not in RULES:
            raise DatasetError(name, f"rule must be one of {', '.join(RULES)}, got {spec['rule']!r}")
        if spec["rule"] == "one_vs_rest":
            spec.setdefault("negative_name", "rest")
        if spec["rule"] == "one_vs_rest" and not spec.get("positive"):
            raise DatasetError(name, "rule one_vs_rest needs `positive: <label value>`")
        if spec["rule"] in ("pair", "subset") and len(spec.get("classes") or []) < 2:
            raise DatasetError(name, f"rule {spec['rule']} needs `classes: [a, b, ...]`")
        return spec

    def build_frames(self, name: str, spec: dict, given: dict) -> tuple[dict, dict]:
        from ..data.build import (
            check_label_values,
            check_splits,
            class_codes,
            classification_frames,
            dropped_rows,
            select_rows,
        )

        check_label_values(name, spec, given)
        given = {s: select_rows(name, spec, df, class_codes) for s, df in given.items()}
        frames, label_names = classification_frames(name, spec, given)
        check_splits(name, frames, label_names)
        return frames, {"label_names": label_names, "dropped": dropped_rows(given)}

    def features(self, meta: dict) -> dict:
        import datasets

        return {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=meta["label_names"])}

    def num_labels(self, splits) -> int:
        return splits["train"].features["label"].num_classes

    # ------------------------------------------------------------ model
    def model_kwargs(self, num_labels: int) -> dict[str, Any]:
        return {"num_labels": num_labels}

    def head_loss(self, logits, labels):
        from torch.nn import functional

        return functional.cross_entropy(logits.float(), labels)

    # ------------------------------------------------------------ token ids and batches
    def batch_labels(self, enc, rows, ids, mask):
        import torch

        return torch.tensor([enc.labels[i] for i in rows], dtype=torch.long)

    # ------------------------------------------------------------ evaluation
    def predict_batch(self, model, out, batch, enc, rows, pad_id: int, runtime) -> tuple[int, list]:
        return len(rows), out.logits.argmax(-1).tolist()

    def split_metrics(self, loss: float, enc, preds: list, num_labels: int) -> dict[str, Any]:
        from ..train.evaluate import classification_metrics

        labels = range(num_labels) if num_labels else sorted(set(enc.labels) | set(preds))
        return {"loss": loss, **classification_metrics(enc.labels, preds, labels)}

    def add_baselines(self, scores: dict, train_labels, evals: dict, num_labels: int) -> None:
        from ..train.evaluate import EVAL_SPLITS, majority_class

        majority = majority_class(train_labels, num_labels)
        for split in EVAL_SPLITS:
            labels = evals[split].labels
            scores[split]["majority_accuracy"] = sum(y == majority for y in labels) / max(1, len(labels))
        scores["test"]["majority_class"] = majority

    def score_line(self, metrics: dict) -> str:
        validation = metrics.get("validation") or {}
        val = f"val {validation['accuracy']:.3f}, " if validation else ""
        return f"test acc {metrics['accuracy']:.3f} ({val}majority {metrics['majority_accuracy']:.3f})"

    def save_predictions(self, run_dir, enc, preds: list) -> None:
        from ..train.evaluate import save_predictions

        save_predictions(run_dir, enc.labels, preds)

    # ------------------------------------------------------------ method=tfidf
    def plain_labels(self, split) -> tuple[list, list[str] | None]:
        return list(split["label"]), split.features["label"].names

    def classical_fit(self, pipeline, texts: list[str], labels: list):
        return pipeline.fit(texts, labels)

    def classical_score(self, model, texts: list[str], labels: list, names: list[str]) -> tuple[dict, list]:
        from ..train.evaluate import classification_metrics
        from ..train.methods.tfidf import log_loss

        probs = model.predict_proba(texts)
        preds = model.classes_[probs.argmax(1)].tolist()
        scores = {
            "loss": log_loss(labels, probs, model.classes_),
            **classification_metrics(labels, preds, range(len(names))),
        }
        return scores, preds
