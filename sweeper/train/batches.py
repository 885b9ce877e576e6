"""Data -> tensors: token ids of each split, padded batches, and which rows each step trains on.

Batches are a pure function of (seed, step): a run resumed from a checkpoint at step k sees exactly
the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import TrainingError


@dataclass(frozen=True)
class Decoding:
    """How a generation split's outputs are produced: greedy, at most max_new_tokens, up to EOS."""

    tokenizer: Any
    max_new_tokens: int
    eos_id: int


@dataclass
class Encoded:
    """Token ids of a split: labelled tasks keep one row per example, lm one row per block,
    generation one row per (source, target) pair."""

    input_ids: list[list[int]]  # generation: the encoder's input (seq2seq), or prompt + target + EOS
    labels: list | None  # a label per row (multilabel: a 0/1 list per row); None for lm and generation
    targets: list[list[int]] | None = None  # generation: each row's label ids (-100: no loss there)
    prompts: list[list[int]] | None = None  # generation: what decoding starts from
    references: list[str] | None = None  # generation: the target texts the outputs are scored against
    sources: list[str] | None = None  # generation: the source texts (for the record's examples)
    seq2seq: bool = False  # generation: labels feed a decoder (T5), not the input's own positions
    decoding: Decoding | None = None  # generation: what evaluation decodes with
    label_names: list[str] | None = None  # multilabel: what each 0/1 of a row's labels stands for


TRUNCATIONS = ("head", "head_tail")


def encode_classification(split, tokenizer, max_length: int, truncation: str = "head") -> Encoded:
    """Each text as at most max_length tokens (special tokens included). A longer text keeps its
    first tokens (`head`) or its first and last halves (`head_tail`: a description's last sentence
    often says what it is: "This package contains the development files". Sun et al. 2019, How to
    Fine-Tune BERT for Text Classification, found head+tail better than the head alone)."""
    # Tokenizers tokenise a whole text before truncating it: cap characters first so a 1 MB text
    # costs what a short one does (a token spans far fewer than 32 characters).
    chars = max_length * 32
    if truncation == "head":
        enc = tokenizer([text[:chars] for text in split["text"]], truncation=True, max_length=max_length)
        return Encoded(enc["input_ids"], list(split["label"]))
    texts = [text if len(text) <= 2 * chars else f"{text[:chars]} {text[-chars:]}" for text in split["text"]]
    prefix, suffix = special_tokens_around(tokenizer)
    rows = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    room = max(0, max_length - len(prefix) - len(suffix))
    return Encoded([prefix + head_and_tail(ids, room) + suffix for ids in rows], list(split["label"]))


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a text ([CLS] / [SEP], BOS, </s>)."""
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next(i for i in range(len(full) - len(body) + 1) if full[i : i + len(body)] == body)
    return full[:start], full[start + len(body) :]


def head_and_tail(ids: list[int], room: int) -> list[int]:
    """`ids` if they fit in `room`; else the first room - room // 2 and the last room // 2."""
    if len(ids) <= room:
        return ids
    tail = room // 2
    return ids[: room - tail] + (ids[len(ids) - tail :] if tail else [])


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


def padded(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of sequences padded to the longest; `left` for batched decoding."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[j, cols] = torch.tensor(s, dtype=torch.long)
        mask[j, cols] = 1
    return ids, mask


def collate(enc: Encoded, rows, pad_id: int, task) -> dict[str, torch.Tensor]:
    """The batch of `rows`: right-padded ids and mask, and the labels the task (sweeper.tasks) makes."""
    ids, mask = padded([enc.input_ids[i] for i in rows], pad_id)
    return {"input_ids": ids, "attention_mask": mask, "labels": task.batch_labels(enc, rows, ids, mask)}


def batch_rows(n_examples: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Rows of the batch at `step`: epoch e is a permutation seeded by (seed, e)."""
    per_epoch = max(1, n_examples // batch_size)  # drop the ragged tail: every batch has batch_size rows
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n_examples)
    return order[k * batch_size : (k + 1) * batch_size].tolist() if n_examples >= batch_size else order.tolist()


def eos_id(tokenizer) -> int:
    """The token that ends a target (BERT-style tokenizers, which the tiny models use, end in [SEP])."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A causal LM's prompt: the tokenizer's chat template (a user turn, then the assistant's header)
    when it has one, else the text itself."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # a BatchEncoding, or ids
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def capped_source(tokenizer, source: str, max_length: int) -> str:
    """The source cut to max_length tokens (the prompt's words around it are kept whole)."""
    ids = tokenizer(source[: max_length * 32], add_special_tokens=False)["input_ids"]
    return source if len(ids) <= max_length else tokenizer.decode(ids[:max_length])


def encode_generation(split, tokenizer, max_length: int, template: str, seq2seq: bool, max_new_tokens: int) -> Encoded:
    """Each pair: the prompt (template with the source capped to max_length tokens) and the target
    (capped to max_length tokens) ended by EOS. Seq2seq: the prompt feeds the encoder, the target
    is the decoder's labels. Causal: prompt + target is one sequence, the loss on the target only."""
    eos = eos_id(tokenizer)
    decoding = Decoding(tokenizer, max_new_tokens, eos)
    sources, references = list(split["source"]), list(split["target"])
    texts = [template.format(source=capped_source(tokenizer, s, max_length)) for s in sources]
    # A target cut at max_length ends without EOS: the model must not learn to stop mid-text.
    targets = [
        ids[:max_length] + ([eos] if len(ids) <= max_length else [])
        for ids in tokenizer(references, add_special_tokens=False)["input_ids"]
    ]
    if seq2seq:
        prompts = tokenizer(texts, truncation=True, max_length=max_length + 32)["input_ids"]
        return Encoded(prompts, None, targets, prompts, references, sources, seq2seq=True, decoding=decoding)
    prompts = [prompt_ids(tokenizer, t) for t in texts]
    inputs = [p + t for p, t in zip(prompts, targets)]
    labels = [[-100] * len(p) + t for p, t in zip(prompts, targets)]
    return Encoded(inputs, None, labels, prompts, references, sources, decoding=decoding)


def encode_splits(splits, tokenizer, cfg, task) -> tuple[Encoded, dict[str, Encoded]]:
    """(train, {"validation": .., "test": ..}) token ids of the point `cfg`, as its task encodes them
    (classification rows, lm blocks of train.max_length, generation pairs). Each evaluation split
    keeps its first train.eval_size rows (blocks)."""
    truncation = str(cfg.train.get("truncation", "head"))
    if truncation not in TRUNCATIONS:  # checked for every task, though only labelled ones read it
        raise TrainingError(f"train.truncation must be one of {', '.join(TRUNCATIONS)}, got {truncation!r}")
    return task.encode(splits, tokenizer, cfg, truncation)
