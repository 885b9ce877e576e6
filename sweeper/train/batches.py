"""Data -> tensors: token ids of each split, padded batches, and which rows each step trains on.

Batches are a pure function of (seed, step): a run resumed from a checkpoint at step k sees exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import TrainingError


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


def encode_splits(splits, tokenizer, train_cfg, task: str) -> tuple[Encoded, dict[str, Encoded]]:
    """(train, {"validation": .., "test": ..}) token ids: lm blocks of train.max_length, classification
    rows. Each evaluation split keeps its first train.eval_size rows (blocks)."""
    max_length, eval_size = int(train_cfg.max_length), int(train_cfg.eval_size)
    if task == "lm":
        evals = {s: encode_lm(splits[s], tokenizer, max_length) for s in ("validation", "test")}
        for enc in evals.values():
            enc.input_ids = enc.input_ids[:eval_size]
        return encode_lm(splits["train"], tokenizer, max_length), evals
    evals = {}
    for s in ("validation", "test"):
        head = splits[s].select(range(min(len(splits[s]), eval_size)))
        evals[s] = encode_classification(head, tokenizer, max_length)
    return encode_classification(splits["train"], tokenizer, max_length), evals
