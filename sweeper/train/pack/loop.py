"""The packed training loop: K points step together through one forward/backward of the shared base.

Each point keeps what it would have alone: its batches (`batch_rows(seed, step)`), its own AdamW,
lr schedule, grad clipping and `max_steps`; its loss is computed on its own rows only, so the
gradient of the summed loss with respect to adapter k is exactly the gradient of loss k.
A point whose loss turns non-finite fails alone (left out of the backward); a point whose
budget ends leaves the pack (evaluated and recorded at once) while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import batch_rows, collate
from ..distributed import step_seed
from ..errors import Interrupted, TrainingError
from ..loop import check_finite, optimizer_step, progress_bar, set_lr
from ..runtime import Runtime
from .layers import PackContext, Slice


# ---------------------------------------------------------------- batches and losses
def concat_batches(batches: list[dict], keys: list[int], pad_id: int, task) -> tuple[dict, list[Slice]]:
    """One batch of the K batches' rows, right-padded to the widest; and who owns which rows."""
    width = max(b["input_ids"].shape[1] for b in batches)

    def pad(t, value):
        return F.pad(t, (0, width - t.shape[1]), value=value)

    out = {
        "input_ids": torch.cat([pad(b["input_ids"], pad_id) for b in batches]),
        "attention_mask": torch.cat([pad(b["attention_mask"], 0) for b in batches]),
    }
    if task.token_level:  # a label per token: padded like the ids
        out["labels"] = torch.cat([pad(b["labels"], -100) for b in batches])
    else:  # a label per row, or (multilabel) a row of 0/1 per label
        out["labels"] = torch.cat(widest_rows([b["labels"] for b in batches]))
    slices = [Slice(k, b["input_ids"].shape[0], b["input_ids"].shape[1]) for k, b in zip(keys, batches)]
    return out, slices


def widest_rows(labels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Label rows of sets of different sizes zero-padded to the widest (the task's loss cuts each
    point's back to its own); one label per row passes as it is."""
    if labels[0].dim() < 2:
        return labels
    widest = max(t.shape[-1] for t in labels)
    return [F.pad(t, (0, widest - t.shape[-1])) for t in labels]


def point_loss(logits: torch.Tensor, labels: torch.Tensor, task) -> torch.Tensor:
    """The loss HF computes for one point, as its task defines it (next-token CE over non-masked
    labels, CE over labels, BCE over label sets)."""
    return task.head_loss(logits, labels)


def own_logits(logits: torch.Tensor, num_labels: int, task) -> torch.Tensor:
    # Heads of a pack may differ in size; the narrower ones are zero-padded: keep a point's own columns.
    return logits if task.token_level else logits[..., :num_labels]


class AdapterView(nn.Module):
    """One point's model seen through the packed base: `view(**batch)` runs the base with every row
    given to adapter `key` and returns `.loss` / `.logits` like the point's own PEFT model, so
    sweeper.train.evaluate scores it unchanged."""

    def __init__(self, base: nn.Module, ctx: PackContext, key: int, num_labels: int, task):
        super().__init__()
        self.__dict__["_base"] = base  # not a registered submodule: the view owns no parameters
        self.ctx, self.key, self.num_labels, self.task = ctx, key, num_labels, task

    def train(self, mode: bool = True):
        self._base.train(mode)
        return super().train(mode)

    def forward(self, input_ids, attention_mask, labels=None):
        self.ctx.slices = [Slice(self.key, input_ids.shape[0], input_ids.shape[1])]
        logits = own_logits(
            self._base(input_ids=input_ids, attention_mask=attention_mask).logits, self.num_labels, self.task
        )
        loss = point_loss(logits, labels, self.task) if labels is not None else None
        return SimpleNamespace(loss=loss, logits=logits)


# ---------------------------------------------------------------- the loop
def set_lrs(members, step: int) -> dict[int, float]:
    return {m.key: set_lr(m.optimizer, m.method, m.peft, step, m.cfg.train) for m in members}


def forward_losses(base, members, step: int, ctx: PackContext, pad_id: int, task, runtime: Runtime):
    """Losses of the running points at `step`, one packed forward."""
    batches = []
    for m in members:
        m.generator.manual_seed(step_seed(int(m.cfg.train.seed), step, 1))  # the solo loop's dropout stream
        rows = batch_rows(len(m.train_enc.input_ids), int(m.cfg.train.batch_size), step, int(m.cfg.train.seed))
        batches.append(collate(m.train_enc, rows, pad_id, task))
    batch, ctx.slices = concat_batches(batches, [m.key for m in members], pad_id, task)
    batch = {k: v.to(runtime.device) for k, v in batch.items()}
    with runtime.autocast():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sizes = [s.rows for s in ctx.slices]
    return [
        point_loss(own_logits(lg, m.num_labels, task), lb, task)
        for m, lg, lb in zip(members, logits.split(sizes), batch["labels"].split(sizes))
    ]


def member_step(m, step: int, loss_value: float, lr: float) -> None:
    """The step tail of one point, as the solo loop does it."""
    optimizer_step(m.optimizer, m.cfg.train.grad_clip)
    m.log.step(step + 1, loss_value, lr, m.method.after_step(step, m.peft, m.optimizer))
    m.final_loss = loss_value


def train_packed(
    base,
    members,
    ctx: PackContext,
    task,
    pad_id: int,
    runtime: Runtime,
    *,
    on_done: Callable,
    on_fail: Callable,
    save_checkpoint: Callable,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Step every member from its start_step to its max_steps; call on_done(m) as each finishes."""
    active = [m for m in members if m.start_step < m.max_steps]
    for m in members:
        if m not in active:
            on_done(m)
    if not active:
        return
    step, last = min(m.start_step for m in active), max(m.max_steps for m in active)
    bar = progress_bar(last, step, f"pack of {len(active)}")
    base.train()
    while active:
        running = [m for m in active if m.start_step <= step]
        t0 = time.perf_counter()
        try:
            lrs = set_lrs(running, step)
            losses = forward_losses(base, running, step, ctx, pad_id, task, runtime)
            kept = []
            for m, loss in zip(running, losses):
                value = float(loss.detach())
                try:
                    check_finite(value, step, lrs[m.key])
                except (
                    TrainingError
                ) as error:  # this point alone fails; the others' gradients do not depend on its rows
                    on_fail(m, error)
                    continue
                kept.append((m, loss, value))
            if kept:
                torch.stack([loss for _, loss, _ in kept]).sum().backward()
        except Exception as error:  # noqa: BLE001  a failure of the shared pass: its points fail
            for m in running:
                if not m.finished:
                    on_fail(m, error)
            kept = []
        stepped = []
        for m, loss, value in kept:
            try:  # its own optimizer and log: a failure here is this point's alone
                member_step(m, step, value, lrs[m.key])
                stepped.append((m, loss, value))
            except Exception as error:  # noqa: BLE001
                on_fail(m, error)
        kept = stepped
        share = (time.perf_counter() - t0) / max(1, len(running))  # the step's time, split evenly
        for m, _, _ in kept:
            m.seconds += share
        step += 1
        bar.update(1)
        active = [m for m in active if not m.finished]
        for m in [m for m in active if step == m.max_steps]:
            on_done(m)
        active = [m for m in active if not m.finished]
        stop = should_stop()
        for m in active:
            every = int(m.cfg.train.checkpoint_every or 0)
            if m.start_step < step and (stop or (every and step % every == 0)):
                save_checkpoint(m, step)
        if stop and active:
            bar.close()
            raise Interrupted(f"stopped at step {step}; checkpoints written for {len(active)} packed points")
    bar.close()
