"""Scoring a trained model on validation and test as its task (sweeper.tasks) measures it: loss and
accuracy / macro-F1 (classification), micro-F1 (multilabel), perplexity (lm), or exact match and chrF
of greedy outputs (generation), plus the test predictions that the report's paired tests read.

    scores, test_predictions = evaluate_splits(model, evals, task, pad_id, batch_size, runtime, num_labels)
    metrics = record_metrics(scores, final_loss, train_labels, evals, task, num_labels)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..files import run_folder, write_file
from ..records import PREDICTIONS_NAME
from .batches import Encoded, collate, padded
from .runtime import Runtime

EVAL_SPLITS = ("validation", "test")


@torch.no_grad()
def predict(model, enc: Encoded, task, pad_id: int, batch_size: int, runtime: Runtime):
    """(mean loss, predictions) over the split, as the task (sweeper.tasks) predicts a batch: labels,
    greedy outputs (generation) or none (lm); the task weighs each batch's loss (lm and generation
    by predicted tokens)."""
    model.eval()
    total_loss, total_weight, preds = 0.0, 0, []
    for start in range(0, len(enc.input_ids), batch_size):
        rows = range(start, min(start + batch_size, len(enc.input_ids)))
        batch = {k: v.to(runtime.device) for k, v in collate(enc, rows, pad_id, task).items()}
        with runtime.autocast():
            out = model(**batch)
        weight, batch_preds = task.predict_batch(model, out, batch, enc, rows, pad_id, runtime)
        preds.extend(batch_preds)
        total_loss += float(out.loss) * weight
        total_weight += weight
    model.train()
    return total_loss / max(1, total_weight), preds


def generate(model, enc: Encoded, rows, pad_id: int, runtime: Runtime) -> list[str]:
    """Greedy outputs of `rows`, batched: prompts left-padded (a causal LM continues each one's last
    token), at most max_new_tokens each, cut at EOS, decoded without special tokens."""
    decoding = enc.decoding
    ids, mask = padded([enc.prompts[i] for i in rows], pad_id, left=not enc.seq2seq)
    with runtime.autocast():
        out = model.generate(
            input_ids=ids.to(runtime.device),
            attention_mask=mask.to(runtime.device),
            max_new_tokens=decoding.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=decoding.eos_id,
            pad_token_id=pad_id,
        )
    new = out if enc.seq2seq else out[:, ids.size(1) :]  # a causal LM's output repeats its prompt
    return [text.strip() for text in decoding.tokenizer.batch_decode(new, skip_special_tokens=True)]


def evaluate(model, enc: Encoded, task, pad_id: int, batch_size: int, runtime: Runtime, num_labels: int = 0):
    """Scores of one split, as the task measures them: {loss, perplexity, n} (lm), {loss, accuracy,
    macro_f1, n} (classification), ..."""
    loss, preds = predict(model, enc, task, pad_id, batch_size, runtime)
    return task.split_metrics(loss, enc, preds, num_labels)


def evaluate_splits(model, evals: dict[str, Encoded], task, pad_id, batch_size, runtime, num_labels):
    """({split: scores} for validation and test, the test predictions)."""
    scores, preds = {}, {}
    for split in EVAL_SPLITS:
        loss, preds[split] = predict(model, evals[split], task, pad_id, batch_size, runtime)
        scores[split] = task.split_metrics(loss, evals[split], preds[split], num_labels)
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


def generation_metrics(references: list[str], outputs: list[str]) -> dict[str, float]:
    """Exact match (after stripping outer whitespace) and corpus chrF (sacrebleu, 0-100): character
    n-gram F-score, which credits a near miss (an inflection, a typo) that exact match does not."""
    import sacrebleu

    exact = [o == r.strip() for o, r in zip(outputs, references)]
    chrf = sacrebleu.corpus_chrf(outputs, [references]).score if outputs else 0.0
    return {"exact_match": float(np.mean(exact)) if exact else 0.0, "chrf": float(chrf), "n": len(outputs)}


def sentence_chrf(references: list[str], outputs: list[str]) -> list[float]:
    import sacrebleu

    return [sacrebleu.sentence_chrf(o, [r]).score for o, r in zip(outputs, references)]


def majority_class(train_labels: list[int], num_labels: int) -> int:
    """The train split's most frequent label (the majority baseline always answers it)."""
    return int(np.bincount(np.asarray(train_labels), minlength=num_labels).argmax())


def record_metrics(
    scores: dict, final_loss: float | None, train_labels, evals: dict[str, Encoded], task, num_labels: int
):
    """The record's `metrics` (schema 2): `validation` and `test` sections (with the task's baselines,
    e.g. the majority class), and the test scores also at the top level under their schema-1 names
    (accuracy, macro_f1, eval_loss, perplexity, n_test, ...). final_loss: the last training loss
    (None for a method without a loss curve, tfidf)."""
    task.add_baselines(scores, train_labels, evals, num_labels)
    test = scores["test"]
    legacy = {"eval_loss": test["loss"], "n_test": test["n"]}
    legacy.update({k: v for k, v in test.items() if k in (*task.metrics, *task.test_metrics)})
    return {**scores, **legacy, "train_loss_final": final_loss}


def save_predictions(run_dir: Path, labels: list, preds: list) -> None:
    """The test predictions beside the record: row i of the test split, its label and the prediction
    (int32), or for generation its reference and output texts and the output's sentence chrF."""
    import pandas as pd

    frame = pd.DataFrame({"row": np.arange(len(labels), dtype="int32"), "label": labels, "pred": preds})
    if labels and isinstance(labels[0], str):
        frame["chrf"] = sentence_chrf(labels, preds)
    else:
        frame = frame.astype("int32")
    write_file(run_folder(run_dir) / PREDICTIONS_NAME, lambda tmp: frame.to_parquet(tmp, index=False))


def generation_examples(enc: Encoded, outputs: list[str], k: int = 5) -> list[dict[str, str]]:
    """The first k test pairs with their outputs, for a person to read in the record."""
    return [
        {"source": s, "reference": r, "output": o} for s, r, o in zip(enc.sources[:k], enc.references[:k], outputs[:k])
    ]
