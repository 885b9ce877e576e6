"""The training loop: one model, one method, one dataset, `train.max_steps` optimizer steps.

A run resumed from a checkpoint at step k sees exactly the batches an uninterrupted run would
(sweeper.train.batches), so its final metrics are identical (CPU, same seed).
The step tail (clip, step, zero_grad, method hook, metrics.jsonl line) is shared with the packed
loop (sweeper.train.pack.loop): `optimizer_step` and `MetricsLog`.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..files import open_append, run_folder
from ..records import METRICS_NAME
from ..runs import target_steps
from ..trackers import NO_SINKS, Sinks
from . import checkpoint as ckpt
from .batches import Encoded, batch_rows, collate
from .distributed import SOLO, World
from .errors import Interrupted, TrainingError
from .runtime import Runtime
from .sharding import training_state_mb


@dataclass
class TrainResult:
    steps: int
    resumed_from_step: int
    train_seconds: float
    examples_seen: int
    final_loss: float
    events: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # early stopping: best_step, best_validation
    state_mb: float = 0.0  # this rank's weights + gradients + optimizer state (sharding.training_state_mb)


def make_optimizer(method, model, train_cfg):
    """The method's optimizer (AdamW; LoRA+ its own groups) over the parameters it may ever train."""
    lr = float(train_cfg.lr)
    if not (math.isfinite(lr) and lr > 0):
        raise TrainingError(f"train.lr must be a finite number > 0, got {train_cfg.lr!r}")
    return method.make_optimizer(model, method.optimizer_parameters(model), lr, float(train_cfg.weight_decay))


def progress_bar(total: int, initial: int, desc: str) -> tqdm:
    # On a terminal a live bar; in a job log one line every 30 s, not one per step.
    interval = 1.0 if sys.stderr.isatty() else 30.0
    return tqdm(
        total=total, initial=initial, desc=desc, unit="step", file=sys.stderr, mininterval=interval, leave=False
    )


# ---------------------------------------------------------------- the step tail (shared with packing)
def check_finite(loss_value: float, step: int, lr: float) -> None:
    if not math.isfinite(loss_value):
        raise TrainingError(f"non-finite training loss {loss_value} at step {step} (lr={lr:.3g}); lower train.lr")


def optimizer_step(optimizer, grad_clip: float | None, before_zero_grad=None) -> None:
    """Clip (train.grad_clip; null disables), step, let the method read the gradients (AdaLoRA's
    budget), and drop them."""
    if grad_clip:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, float(grad_clip))
    optimizer.step()
    if before_zero_grad is not None:
        before_zero_grad()
    optimizer.zero_grad(set_to_none=True)


class MetricsLog:
    """The one writer of <run_dir>/metrics.jsonl: method events at once, the loss every log_every steps.
    The point's trackers (`sinks`, sweeper.trackers) receive every line it writes, and its flushes.

    Opening it drops lines past `start_step` (written after the checkpoint a resumed run restarts from).
    """

    def __init__(
        self,
        run_dir: Path,
        start_step: int,
        log_every: int,
        max_steps: int,
        write: bool = True,
        sinks: Sinks = NO_SINKS,
    ):
        self.file = None  # write=False: a rank > 0 of a distributed point keeps the events, writes nothing
        self.sinks = sinks if write else NO_SINKS
        if write:
            path = run_folder(run_dir) / METRICS_NAME
            ckpt.truncate_metrics(path, start_step)
            self.file = open_append(path)  # a planted link is refused, never appended to
            self.sinks.start(start_step)
        self.log_every, self.max_steps = int(log_every), int(max_steps)
        self.events: list[dict[str, Any]] = []

    def step(self, done: int, loss_value: float, lr: float, events: list[dict[str, Any]]) -> None:
        """After optimizer step number `done` (1-based)."""
        for event in events:
            line = {"step": done, **event}
            self.events.append(line)
            self._write(line)
        if done % self.log_every == 0 or done == self.max_steps:
            self._write({"step": done, "loss": round(loss_value, 6), "lr": lr})
            self.flush()

    def _write(self, line: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(line) + "\n")
            self.sinks.log(line)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
            self.sinks.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# ---------------------------------------------------------------- the loop
def batch_share(batch: dict, mine: list[int], rows: list[int], task, world: World) -> float:
    """This rank's share of the global batch's loss: of its rows, or for a task whose loss is a mean
    over target tokens of uneven lengths (generation) of its target tokens, so the ranks' averaged
    gradient is the one-process gradient."""
    if not task.uneven_token_loss:
        return len(mine) / len(rows)
    tokens = float((batch["labels"] != -100).sum())
    return tokens / max(1.0, world.mean(tokens) * world.size)


def set_lr(optimizer, method, model, step: int, train_cfg) -> float:
    """The method's hook before `step`, and the lr of `step` for every parameter group (times the
    group's `lr_ratio`: LoRA+'s B matrices)."""
    method.before_step(step, model)
    lr = float(train_cfg.lr) * method.lr_scale(step, train_cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)
    return lr


def train(
    *,
    model,
    method,
    train_enc: Encoded,
    task: str,
    pad_id: int,
    train_cfg,
    run_dir: Path,
    runtime: Runtime,
    should_stop: Callable[[], bool] = lambda: False,
    watch=None,
    world: World = SOLO,
    sinks: Sinks = NO_SINKS,
) -> TrainResult:
    """Train for train_cfg.max_steps, resuming from run_dir/checkpoint when one exists.

    `watch` (sweeper.train.early_stop.BestStep, for train.eval_every > 0) scores validation every
    eval_every steps, may stop early, and leaves the model at its best validation step.
    `world` (sweeper.train.distributed): each rank trains its rows of every step's global batch
    through DDP (or FSDP: then every rank watches and joins each checkpoint's gathering); rank 0
    alone logs and writes checkpoints, and its stop decisions hold for all."""
    optimizer = make_optimizer(method, model, train_cfg)
    if watch is not None:
        watch.snapshot = lambda: ckpt.weights_to_save(model, optimizer, method)
    start_step = ckpt.load(run_dir, model, optimizer, method, watch, tidy=world.main)
    # What the segments before this one did: a resumed record sums it (events, seconds, examples).
    before = ckpt.loop_state(run_dir) if start_step else ckpt.LoopState()
    max_steps, batch_size, seed = int(train_cfg.max_steps), int(train_cfg.batch_size), int(train_cfg.seed)
    # A halving rung (train.stop_at) pauses early, on max_steps' schedule; a checkpoint already past
    # it (a run killed in its evaluation) trains no further and is scored where it stands.
    end = max(target_steps(train_cfg), start_step)
    log = MetricsLog(run_dir, start_step, train_cfg.log_every, end, write=world.main, sinks=sinks)
    log.events = list(before.events)
    checkpoint_every = int(train_cfg.checkpoint_every or 0)
    loss_value, seconds, examples = float(before.loss), float(before.train_seconds), int(before.examples)
    finished, done = before.finished, start_step

    def save(step: int, finished: bool = False) -> None:
        if world.main or world.sharded:  # FSDP: every rank gathers, rank 0 writes
            loop = ckpt.LoopState(log.events, seconds, examples, loss_value, finished)
            ckpt.save(run_dir, model, optimizer, method, step, watch, loop=loop, write=world.main)

    method.lr_scale(start_step, train_cfg)  # a method that records its schedule (ReLoRA) sees it, steps or not
    model.train()
    bar = progress_bar(max_steps, start_step, Path(run_dir).name[:40]) if world.main else None
    try:
        for step in range(start_step, start_step if finished else end):
            t0 = time.perf_counter()
            lr = set_lr(optimizer, method, model, step, train_cfg)
            rows = batch_rows(len(train_enc.input_ids), batch_size, step, seed)
            mine = world.shard(rows)
            batch = {k: v.to(runtime.device) for k, v in collate(train_enc, mine, pad_id, task).items()}
            world.step_seed(seed, step, shared=False)
            with runtime.autocast():
                loss = world.forward_module(model)(**batch).loss
            if world.size > 1:  # DDP averages the ranks' gradients: weigh each by its share of the batch
                loss = loss * (world.size * batch_share(batch, mine, rows, task, world))
            loss_value = world.mean(float(loss.detach()))
            check_finite(loss_value, step, lr)
            loss.backward()
            optimizer_step(optimizer, train_cfg.grad_clip, functools.partial(method.before_zero_grad, step, model))
            world.step_seed(seed, step, shared=True)
            events = method.after_step(step, model, optimizer)
            if events:
                world.sync(model)  # a merge / re-init: rank 0's result everywhere, whatever each rank computed
            seconds += time.perf_counter() - t0
            examples += len(rows)
            done = step + 1
            early_stop = False
            if watch is not None:
                checked, early_stop = watch.after_step(done, model, last=done == end)
                events = events + checked
            log.step(done, loss_value, lr, events)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            early_stop, stop = world.from_main(early_stop, done < end and should_stop())
            if early_stop or done == end:
                break  # a stop asked for on the last step: evaluation follows, nothing left to train
            if stop or (checkpoint_every and done % checkpoint_every == 0):
                log.flush()
                save(done)
                if stop:
                    raise Interrupted(f"stopped at step {done}; checkpoint written")
        if end < max_steps:  # a rung: the checkpoint a promotion continues from (the record keeps it)
            log.flush()
            save(done)
        # A kill during evaluation does not retrain (rank 0's stop request decides on every rank).
        elif not finished and world.from_main(bool(checkpoint_every) or should_stop())[0]:
            log.flush()
            save(done, finished=True)
    finally:
        if bar is not None:
            bar.close()
        log.close()
    state_mb = training_state_mb(model, optimizer)
    best = {}
    if watch is not None:
        watch.restore(model)
        best = {**watch.summary(), "stopped_early": done < end}
    return TrainResult(done, start_step, seconds, examples, loss_value, log.events, best, state_mb)
