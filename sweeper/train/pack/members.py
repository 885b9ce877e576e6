"""One pack: K grid points trained on one shared frozen base (see sweeper.train.pack)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ...records import Status
from .. import checkpoint as ckpt
from .. import lifecycle
from ..batches import encode_splits
from ..context import SOLO, PointContext
from ..evaluate import evaluate_splits, record_metrics
from ..loop import MetricsLog, make_optimizer
from ..methods import build_method
from ..models import build_model, count_parameters
from ..point import check_settings, float32_trainable, load_point_data, run_point, saved_adapter, task_of
from ..record import outcome
from ..runtime import PeakMemory, setup_runtime
from .grouping import group_points
from .layers import PackContext, attach_adapter, share_frozen_weights
from .loop import AdapterView, train_packed


# ---------------------------------------------------------------- one pack
@dataclass
class Member:
    """One grid point inside a pack."""

    key: int
    claim: lifecycle.Claim  # the point's lock, record and trackers (sweeper.train.lifecycle)
    splits: Any = None
    num_labels: int = 0
    train_enc: Any = None
    evals: Any = None
    peft: Any = None
    method: Any = None
    optimizer: Any = None
    generator: Any = None
    trainable: int = 0
    total: int = 0
    start_step: int = 0
    max_steps: int = 0
    seconds: float = 0.0
    examples_before: int = 0  # examples of the segments before a resume (checkpoint/loop.json)
    final_loss: float = float("nan")
    log: MetricsLog | None = None
    finished: bool = False

    @property
    def cfg(self) -> DictConfig:
        return self.claim.cfg

    @property
    def record(self) -> dict[str, Any]:
        return self.claim.record

    @property
    def run_dir(self) -> Path:
        return self.claim.run_dir


class Pack:
    def __init__(self, cfgs: list[DictConfig], ctx: PointContext = SOLO):
        self.cfgs, self.results, self.members, self.ctx = cfgs, [None] * len(cfgs), [], ctx
        self.started = time.time()
        for k, cfg in enumerate(cfgs):
            claimed = lifecycle.claim(cfg, ctx, self.started)  # as run_point: skip, lock, mark started, trackers
            if isinstance(claimed, lifecycle.Claim):
                self.members.append(Member(k, claimed))
            else:  # done before, busy elsewhere, or failed before it began
                self.results[k] = claimed
        self.task = task_of(self.members[0].cfg) if self.members else None  # a pack shares one task (grouping)
        self.layers = None

    def release(self) -> None:
        for m in self.members:
            m.claim.release()

    # ------------------------------------------------------------ outcomes
    def fail(self, m: Member, error: BaseException) -> None:
        m.finished = True
        if m.log is not None:
            m.log.close()
        self.results[m.key] = m.claim.fail(error)

    def done(self, m: Member) -> None:
        """Evaluate a point whose budget ended, save its adapter, write its record."""
        try:
            tr = m.cfg.train
            view = AdapterView(self.base, self.layers, m.key, m.num_labels, self.task)
            args = (self.task, self.pad_id, int(tr.eval_batch_size), self.runtime, m.num_labels)
            scores, test_preds = evaluate_splits(view, m.evals, *args)
            metrics = record_metrics(scores, m.final_loss, m.train_enc.labels, m.evals, self.task, m.num_labels)
            self.task.save_predictions(m.run_dir, m.evals["test"], test_preds)
            adapter = saved_adapter(m.method, m.peft, tr, m.run_dir)  # PEFT format: config + safetensors
        except Exception as error:  # noqa: BLE001
            self.fail(m, error)
            return
        m.finished = True
        m.log.close()
        # train_seconds: this point's share of each packed step (the step's time / points in it).
        result = outcome(
            metrics=metrics,
            trainable=m.trainable,
            total=m.total,
            steps=m.max_steps,
            resumed_from_step=m.start_step,
            method=m.method,
            events=m.log.events,
            train_seconds=m.seconds,
            examples=m.examples_before + (m.max_steps - m.start_step) * int(tr.batch_size),
        )
        result["cost"]["peak_memory_mb"] = self.memory.mb
        if set_aside := ckpt.set_aside_names(m.run_dir):
            result["train"]["set_aside_checkpoints"] = set_aside  # corrupt ones, kept for a person to look at
        pack = {"size": len(self.members), "index": m.key, "run_ids": [x.record["run_id"] for x in self.members]}
        if adapter:
            result["adapter"] = adapter
        self.results[m.key] = m.claim.settle(status=Status.OK, pack=pack, **result)

    # ------------------------------------------------------------ setup
    def load_data(self, m: Member) -> None:
        check_settings(m.cfg)
        m.splits = load_point_data(m.cfg.dataset)
        m.num_labels = self.task.num_labels(m.splits)

    def build_base(self, m: Member) -> None:
        """The shared frozen base, built as the first point's model would be (its seed), quantised for qlora."""
        torch.manual_seed(int(m.cfg.train.seed))
        method = build_method(m.cfg.method, m.cfg.model, self.task)
        self.base, self.tokenizer = build_model(m.cfg.model, self.task, m.num_labels, method.loading(self.runtime))
        method.prepare_shared_base(self.base)  # qlora: quantised to 4-bit once, for all members
        self.base.requires_grad_(False)
        # On the device before any member shares it: a member then points at the device tensors,
        # and its own .to(device) finds them there (no copy). Shared on the CPU first, every member's
        # .to(device) would give it its own device copy of the whole base (K+1 bases in memory).
        self.base.to(self.runtime.device)
        self.base_params = dict(self.base.named_parameters())  # names before any wrapper is attached
        self.pad_id = self.tokenizer.pad_token_id

    def add_member(self, m: Member) -> None:
        """Build the point's model + adapter exactly as run_point would, then hang its adapter on the base."""
        tr = m.cfg.train
        torch.manual_seed(int(tr.seed))  # run_point seeds here too (setup_runtime) before building
        m.method = build_method(m.cfg.method, m.cfg.model, self.task)
        loading = m.method.loading(self.runtime)  # as run_point loads it: bf16, or 4-bit while loading
        model, _ = build_model(m.cfg.model, self.task, m.num_labels, loading)
        m.peft = m.method.wrap(model)
        if loading.dtype != torch.float32:
            float32_trainable(m.peft)
        m.generator = self.dropout_generator()
        share_frozen_weights(m.peft, self.base_params)
        m.peft.to(self.runtime.device)
        m.trainable, m.total = count_parameters(m.peft)
        m.optimizer = make_optimizer(m.method, m.peft, tr)
        ckpt.prepare(m.run_dir)  # a corrupt checkpoint set aside: this point restarts from an earlier one
        m.start_step = ckpt.load(m.run_dir, m.peft, m.optimizer, m.method)
        before = ckpt.loop_state(m.run_dir) if m.start_step else ckpt.LoopState()  # the earlier segments
        m.seconds, m.examples_before, m.final_loss = before.train_seconds, before.examples, before.loss
        rng = _global_rng(m.generator.device) if m.start_step else None
        if rng is not None:  # the checkpoint holds this point's dropout RNG (see save_checkpoint)
            m.generator.set_state(rng)
        m.max_steps = int(tr.max_steps)
        m.train_enc, m.evals = encode_splits(m.splits, self.tokenizer, m.cfg, self.task)
        m.splits = None
        attach_adapter(self.base, m.key, m.peft, self.layers, m.generator)
        m.log = MetricsLog(m.run_dir, m.start_step, tr.log_every, m.max_steps, sinks=m.claim.sinks)
        m.log.events = list(before.events)

    def dropout_generator(self) -> torch.Generator:
        # On CPU: the global RNG exactly as run_point's training would find it, so LoRA dropout masks match.
        device = self.runtime.device
        if device.type == "cpu":
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
            return generator
        generator = torch.Generator(device=device)
        generator.manual_seed(int(torch.initial_seed()))
        return generator

    def save_checkpoint(self, m: Member, step: int) -> None:
        # sweeper.train.checkpoint stores the global RNG (CPU, and CUDA's): lend it this point's
        # dropout RNG for the save, so a resumed pack draws the masks an uninterrupted one would.
        device = m.generator.device
        saved = _global_rng(device)
        _set_global_rng(device, m.generator.get_state())
        try:
            m.log.flush()
            examples = m.examples_before + (step - m.start_step) * int(m.cfg.train.batch_size)
            loop = ckpt.LoopState(m.log.events, m.seconds, examples, m.final_loss)
            ckpt.save(m.run_dir, m.peft, m.optimizer, m.method, step, loop=loop)
        finally:
            _set_global_rng(device, saved)

    # ------------------------------------------------------------ run
    def run(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]]:
        if not self.members:
            return self.results
        self.runtime = setup_runtime(self.members[0].cfg.train, threads=self.ctx.threads)
        self.layers = PackContext()
        with PeakMemory(self.runtime.device) as self.memory:
            self.setup_step(self.load_data, self.members)
            ready = [m for m in self.members if not m.finished]
            if not ready:
                return self.results
            try:
                self.build_base(ready[0])
            except Exception as error:  # noqa: BLE001  no base, no pack: every point fails with the reason
                for m in ready:
                    self.fail(m, error)
                return self.results
            ready = self.setup_step(self.add_member, ready)
            train_packed(
                self.base,
                ready,
                self.layers,
                self.task,
                self.pad_id,
                self.runtime,
                on_done=self.done,
                on_fail=self.fail,
                save_checkpoint=self.save_checkpoint,
                should_stop=should_stop,
            )
        return self.results

    def setup_step(self, fn: Callable[[Member], None], members: list[Member]) -> list[Member]:
        """Run a setup step for each point; one that raises fails alone."""
        for m in members:
            try:
                fn(m)
            except Exception as error:  # noqa: BLE001
                self.fail(m, error)
        return [m for m in members if not m.finished]


def _global_rng(device: torch.device) -> torch.Tensor | None:
    """The global RNG state a checkpoint keeps for `device` (CPU, CUDA); None for other devices."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state() if device.type == "cpu" else None


def _set_global_rng(device: torch.device, state: torch.Tensor | None) -> None:
    if state is None or device.type not in ("cpu", "cuda"):
        return  # mps, xpu: no RNG state in the checkpoint to lend (the dropout stream restarts on resume)
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def run_packed(cfgs: list[DictConfig], ctx: PointContext = SOLO) -> list[dict[str, Any]]:
    """Train `cfgs` packed wherever they can share a base (see can_pack); one record per cfg, in order.
    A point that cannot be packed with any other runs alone through run_point."""
    records: list[dict[str, Any] | None] = [None] * len(cfgs)
    for group in group_points(cfgs, size=len(cfgs)):
        if len(group) == 1:
            records[group[0]] = run_point(cfgs[group[0]], ctx)
            continue
        pack = Pack([cfgs[i] for i in group], ctx)
        try:
            for i, record in zip(group, pack.run(ctx.should_stop)):
                records[i] = record
        finally:
            pack.release()
    return records
