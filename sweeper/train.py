"""The training loop: one model, one method, one dataset, `train.max_steps` optimizer steps.

Batches are a pure function of (seed, step): a run resumed from a checkpoint at step k sees exactly
the batches an uninterrupted run would, so its final metrics are identical (CPU, same seed).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .records import METRICS_NAME


class TrainingError(RuntimeError):
    """Training went wrong in a way the researcher must fix (NaN loss, ...); one-line message."""


class Interrupted(Exception):
    """Raised after a checkpoint was written because the job was asked to stop (SLURM USR2, SIGTERM)."""


# ---------------------------------------------------------------- data -> tensors
@dataclass
class Encoded:
    """Token ids of a split: classification keeps one row per example, lm one row per block."""

    input_ids: list[list[int]]
    labels: list[int] | None  # classification labels; None for lm


def encode_classification(split, tokenizer, max_length: int) -> Encoded:
    # Tokenizers tokenise a whole text before truncating it: cap characters first so a 1 MB text
    # costs what a short one does (a token spans far fewer than 32 characters).
    texts = [text[: max_length * 32] for text in split["text"]]
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return Encoded(enc["input_ids"], list(split["label"]))


def encode_lm(split, tokenizer, block_size: int) -> Encoded:
    """Concatenate all texts (separated by EOS) and cut the stream into blocks of `block_size`."""
    sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids: list[int] = []
    for row in tokenizer(list(split["text"]), add_special_tokens=False)["input_ids"]:
        ids.extend(row)
        if sep is not None:
            ids.append(sep)
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise TrainingError(f"lm split has {len(ids)} tokens, fewer than one block of {block_size}")
    return Encoded([ids[i * block_size : (i + 1) * block_size] for i in range(n_blocks)], None)


def collate(enc: Encoded, rows, pad_id: int, task: str) -> dict[str, torch.Tensor]:
    seqs = [enc.input_ids[i] for i in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[j, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if task == "lm":
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    else:
        batch["labels"] = torch.tensor([enc.labels[i] for i in rows], dtype=torch.long)
    return batch


def batch_rows(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows of the batch at `step`: epoch e is a permutation seeded by (seed, e)."""
    per_epoch = max(1, n_examples // batch_size)  # drop the ragged tail: every batch has batch_size rows
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return order[k * batch_size : (k + 1) * batch_size].tolist() if n_examples >= batch_size else order.tolist()


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, enc: Encoded, task: str, pad_id: int, batch_size: int, device, autocast) -> dict[str, float]:
    model.eval()
    total_loss, total_weight, preds = 0.0, 0, []
    for start in range(0, len(enc.input_ids), batch_size):
        rows = range(start, min(start + batch_size, len(enc.input_ids)))
        batch = {k: v.to(device) for k, v in collate(enc, rows, pad_id, task).items()}
        with autocast():
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


# ---------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    steps: int
    resumed_from_step: int
    train_seconds: float
    examples_seen: int
    final_loss: float
    events: list[dict[str, Any]] = field(default_factory=list)


def make_optimizer(params, train_cfg):
    lr = float(train_cfg.lr)
    if not (math.isfinite(lr) and lr > 0):
        raise TrainingError(f"train.lr must be a finite number > 0, got {train_cfg.lr!r}")
    return torch.optim.AdamW(params, lr=lr, weight_decay=float(train_cfg.weight_decay))


def train(
    model,
    method,
    train_enc: Encoded,
    task: str,
    pad_id: int,
    train_cfg,
    run_dir: Path,
    device,
    autocast,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainResult:
    """Train for train_cfg.max_steps, resuming from run_dir/checkpoint when one exists."""
    optimizer = make_optimizer(method.optimizer_parameters(model), train_cfg)
    start_step = ckpt.load(run_dir, model, optimizer, method)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    metrics_path = Path(run_dir) / METRICS_NAME
    ckpt.truncate_metrics(metrics_path, start_step)
    base_lr, max_steps = float(train_cfg.lr), int(train_cfg.max_steps)
    checkpoint_every = int(train_cfg.get("checkpoint_every") or 0)
    events: list[dict[str, Any]] = []
    loss_value, seconds = float("nan"), 0.0
    model.train()
    bar = tqdm(total=max_steps, initial=start_step, desc=Path(run_dir).name[:40], unit="step",
               file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0, leave=False)
    with open(metrics_path, "a", encoding="utf-8") as log:
        for step in range(start_step, max_steps):
            t0 = time.perf_counter()
            method.before_step(step, model)
            lr = base_lr * method.lr_scale(step, train_cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = batch_rows(len(train_enc.input_ids), int(train_cfg.batch_size), step, int(train_cfg.seed))
            batch = {k: v.to(device) for k, v in collate(train_enc, rows, pad_id, task).items()}
            with autocast():
                loss = model(**batch).loss
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise TrainingError(f"non-finite training loss {loss_value} at step {step} (lr={lr:.3g}); lower train.lr")
            loss.backward()
            if train_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], float(train_cfg.grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_events = method.after_step(step, model, optimizer)
            seconds += time.perf_counter() - t0
            done = step + 1
            for event in step_events:
                events.append({"step": done, **event})
                log.write(json.dumps({"step": done, **event}) + "\n")
            if done % int(train_cfg.log_every) == 0 or done == max_steps:
                log.write(json.dumps({"step": done, "loss": round(loss_value, 6), "lr": lr}) + "\n")
                log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            stop = should_stop()
            if stop or (checkpoint_every and done % checkpoint_every == 0 and done < max_steps):
                log.flush()
                ckpt.save(run_dir, model, optimizer, method, done)
                if stop:
                    bar.close()
                    raise Interrupted(f"stopped at step {done}; checkpoint written")
    bar.close()
    return TrainResult(max_steps, start_step, seconds, (max_steps - start_step) * int(train_cfg.batch_size), loss_value, events)
