"""TF-IDF + logistic regression: the classical baseline every table should hold (scikit-learn);
one-vs-rest logistic regressions for a multilabel task (the task fits and scores it).

Word (1-2) and character (2-5, within word boundaries) n-grams, sublinear tf, an L2 logistic
regression. It trains on the same train split and is scored on the same validation / test rows as
every other method of the grid, so its test predictions pair row by row with theirs (the report's
McNemar tests). No model and no torch loop: `model` is ignored (the conf says so, the run id and the
record leave it out) and of `train` only seed and eval_size apply.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ...settings import NGRAMS, POSITIVE, integer
from ..batches import Encoded
from ..evaluate import EVAL_SPLITS
from .base import Method, MethodError, register


@register("tfidf")
class Tfidf(Method):
    standalone = True  # trains and scores itself: run_point builds no model for it
    SETTINGS = {"C": POSITIVE, "max_iter": integer(1), "word_ngrams": NGRAMS, "char_ngrams": NGRAMS}

    def __init__(self, cfg, model_cfg, task):
        super().__init__(cfg, model_cfg, task)
        if not task.classical:
            raise MethodError(f"method 'tfidf' needs a classification or multilabel dataset, not task '{task.name}'")

    def pipeline(self, seed: int):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline, make_union

        c = self.cfg
        words = TfidfVectorizer(analyzer="word", ngram_range=tuple(c.word_ngrams), sublinear_tf=True, min_df=1)
        chars = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(c.char_ngrams), sublinear_tf=True, min_df=2)
        classifier = LogisticRegression(C=float(c.C), max_iter=int(c.max_iter), random_state=seed)
        return make_pipeline(make_union(words, chars), classifier)

    def fit_and_score(self, splits, train_cfg, num_labels: int) -> tuple[dict, dict[str, Encoded], list[int], dict]:
        """(scores per eval split, the eval splits' labels, test predictions, sizes and cost)."""
        eval_size = int(train_cfg.eval_size)
        started = time.perf_counter()
        train_labels, _ = self.task.plain_labels(splits["train"])
        model = self.task.classical_fit(self.pipeline(int(train_cfg.seed)), list(splits["train"]["text"]), train_labels)
        train_seconds = time.perf_counter() - started
        scores, evals, test_preds = {}, {}, []
        for split in EVAL_SPLITS:
            head = splits[split].select(range(min(len(splits[split]), eval_size)))
            labels, names = self.task.plain_labels(head)
            scores[split], preds = self.task.classical_score(model, list(head["text"]), labels, names)
            evals[split], test_preds = Encoded([], labels, label_names=names), preds
        parameters, features = classifier_size(model[-1])
        info = {"parameters": parameters, "train_seconds": train_seconds, "features": features}
        return scores, evals, test_preds, info

    def summary(self) -> dict[str, Any]:
        return {"C": float(self.cfg.C)}


def classifier_size(classifier) -> tuple[int, int]:
    """(weights + intercepts, features) of a logistic regression, or of one-vs-rest's several (a label
    that train holds on every row or on none has a constant predictor there, with no weights)."""
    parts = [p for p in getattr(classifier, "estimators_", [classifier]) if hasattr(p, "coef_")]
    if not parts:
        return 0, 0
    return sum(int(p.coef_.size + p.intercept_.size) for p in parts), int(parts[0].coef_.shape[1])


def log_loss(labels: list[int], probs: np.ndarray, classes: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (a label unseen in train gets probability ~0)."""
    column = {int(c): i for i, c in enumerate(classes)}
    p = np.array([probs[i, column[y]] if y in column else 0.0 for i, y in enumerate(labels)])
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))
