"""TF-IDF + logistic regression: the classical baseline every table should hold (scikit-learn).

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
from ..evaluate import EVAL_SPLITS, classification_metrics
from .base import Method, MethodError, register


@register("tfidf")
class Tfidf(Method):
    standalone = True  # trains and scores itself: run_point builds no model for it
    SETTINGS = {"C": POSITIVE, "max_iter": integer(1), "word_ngrams": NGRAMS, "char_ngrams": NGRAMS}

    def __init__(self, cfg, model_cfg, task: str):
        super().__init__(cfg, model_cfg, task)
        if task != "classification":
            raise MethodError(f"method 'tfidf' needs a classification dataset, not task '{task}'")

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
        model = self.pipeline(int(train_cfg.seed)).fit(list(splits["train"]["text"]), list(splits["train"]["label"]))
        train_seconds = time.perf_counter() - started
        scores, evals, test_preds = {}, {}, []
        for split in EVAL_SPLITS:
            head = splits[split].select(range(min(len(splits[split]), eval_size)))
            labels = list(head["label"])
            probs = model.predict_proba(list(head["text"]))
            preds = model.classes_[probs.argmax(1)].tolist()
            scores[split] = {
                "loss": log_loss(labels, probs, model.classes_),
                **classification_metrics(labels, preds, range(num_labels)),
            }
            evals[split], test_preds = Encoded([], labels), preds
        coef = model[-1].coef_
        info = {"parameters": int(coef.size + model[-1].intercept_.size), "train_seconds": train_seconds,
                "features": int(coef.shape[1])}  # fmt: skip
        return scores, evals, test_preds, info

    def summary(self) -> dict[str, Any]:
        return {"C": float(self.cfg.C)}


def log_loss(labels: list[int], probs: np.ndarray, classes: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels (a label unseen in train gets probability ~0)."""
    column = {int(c): i for i, c in enumerate(classes)}
    p = np.array([probs[i, column[y]] if y in column else 0.0 for i, y in enumerate(labels)])
    return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))
