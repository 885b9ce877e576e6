"""Packed adapters (MLoRA-style): K LoRA grid points train in one process on ONE frozen base.

    records = run_packed(cfgs)          # one record per cfg, same schema and files as run_point
    groups = group_points(cfgs, size=8) # index lists of points that may share a pack
    can_pack(cfg_a, cfg_b)

Points pack together when they share the base model, the task, the method family (lora or qlora,
same quantisation) and the sequence/runtime settings (train.max_length, device, dtype, threads);
they may differ in dataset, rank, alpha, dropout, target modules, lr and schedule, batch size,
max_steps and - for a pretrained base - seed. A randomly initialised base (model.source=config)
is a function of the seed, so there the seed must match too.

Each step concatenates the K batches and runs the base once; each adapter adds its own B@A to its
own rows (sweeper.pack_lora), each point has its own AdamW, lr schedule and budget
(sweeper.pack_train). Each point is initialised exactly as run_point would (its model built and
wrapped under torch.manual_seed(its seed)), so with the same seeds a packed point's losses and
metrics match its run alone (CPU, float32; docs/packing.md gives the tolerance).

A point that fails (bad data, an invalid rank, a non-finite loss) fails alone with its one-line
record; the others finish. Each finished point saves its adapter in PEFT's format under
<run_dir>/adapter, loadable with PeftModel.from_pretrained onto a freshly built base.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from . import checkpoint as ckpt
from .records import METRICS_NAME

PACKABLE_METHODS = ("lora", "qlora")
# Keys that may differ between the points of one pack; every other key of `method` / `train` must match.
PER_POINT_METHOD_KEYS = {"r", "alpha", "dropout", "lr", "target_modules", "use_rslora"}
PER_POINT_TRAIN_KEYS = {"lr", "max_steps", "batch_size", "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip",
                        "seed", "log_every", "eval_size", "eval_batch_size", "checkpoint_every", "save_adapter"}


# ---------------------------------------------------------------- grouping
def pack_key(cfg: DictConfig) -> str | None:
    """What points of one pack share, as a string; None when the point cannot be packed at all."""
    try:
        model = OmegaConf.to_container(cfg.model, resolve=True)
        method = OmegaConf.to_container(cfg.method, resolve=True)
        train = OmegaConf.to_container(cfg.train, resolve=True)
        task = str(cfg.dataset.get("task", "classification"))
    except Exception:  # noqa: BLE001  an unresolvable config runs alone (and fails there with its record)
        return None
    if method.get("name") not in PACKABLE_METHODS or method.get("warm_start_steps"):
        return None  # relora/full change the base; a warm start trains it
    if model.get("arch") == "lstm" or model.get("lora_target_parameters"):
        return None  # LoRA on target_parameters (LSTM weights) is not an nn.Linear delta
    if method.get("gradient_checkpointing"):
        return None  # recomputation restores the global RNG, not each adapter's dropout generator
    shared_train = {k: v for k, v in train.items() if k not in PER_POINT_TRAIN_KEYS}
    if model.get("source") == "config":
        shared_train["seed"] = train.get("seed")  # a randomly initialised base depends on the seed
    shared_method = {k: v for k, v in method.items() if k not in PER_POINT_METHOD_KEYS}
    if method.get("quantize") == "targets":
        shared_method["target_modules"] = method.get("target_modules")  # they decide which base layers are 4-bit
    return json.dumps([task, model, shared_method, shared_train], sort_keys=True, default=str)


def can_pack(cfg_a: DictConfig, cfg_b: DictConfig) -> bool:
    key = pack_key(cfg_a)
    return key is not None and key == pack_key(cfg_b)


def group_points(cfgs: list[DictConfig], size: int) -> list[list[int]]:
    """Indices of `cfgs` in groups of at most `size` packable points (first come, first placed);
    an unpackable point is a group of one. Order within and across groups follows `cfgs`."""
    groups: list[list[int]] = []
    open_groups: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = pack_key(cfg)
        if key is None or size <= 1:
            groups.append([i])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(i)
    return groups


# ---------------------------------------------------------------- one pack
@dataclass
class Member:
    """One grid point inside a pack."""

    key: int
    cfg: DictConfig
    record: dict[str, Any]
    run_dir: Path
    started: float
    splits: Any = None
    num_labels: int = 0
    train_enc: Any = None
    eval_enc: Any = None
    peft: Any = None
    method: Any = None
    optimizer: Any = None
    generator: Any = None
    trainable: int = 0
    total: int = 0
    start_step: int = 0
    max_steps: int = 0
    seconds: float = 0.0
    final_loss: float = float("nan")
    events: list = field(default_factory=list)
    log: Any = None
    finished: bool = False


class Pack:
    def __init__(self, cfgs: list[DictConfig]):
        from .worker import finish_record, finished_record, start_record

        self.cfgs, self.results, self.members = cfgs, [None] * len(cfgs), []
        self.started = time.time()
        for k, cfg in enumerate(cfgs):
            record, run_dir = start_record(cfg)
            previous = finished_record(cfg, run_dir)
            if previous is not None:  # relaunched sweep: the existing record as it is
                self.results[k] = previous
            elif record["status"] != "running":  # a config that does not resolve: its failed record
                self.results[k] = finish_record(record, run_dir, self.started)
            else:
                self.members.append(Member(k, cfg, record, run_dir, self.started))
        self.task = str(self.members[0].cfg.dataset.get("task", "classification")) if self.members else "classification"
        self.ctx = None

    # ------------------------------------------------------------ outcomes
    def fail(self, m: Member, error: BaseException) -> None:
        from .worker import finish_record, one_line

        m.finished = True
        if m.log is not None:
            m.log.close()
        m.record.update(status="failed", error=one_line(error), error_type=type(error).__name__)
        self.results[m.key] = finish_record(m.record, m.run_dir, m.started)

    def done(self, m: Member) -> None:
        """Evaluate a point whose budget ended, save its adapter, write its record."""
        from .pack_train import AdapterView
        from .train import evaluate
        from .worker import add_final_metrics, finish_record

        try:
            tr = m.cfg.train
            view = AdapterView(self.base, self.ctx, m.key, m.num_labels, self.task)
            metrics = evaluate(view, m.eval_enc, self.task, self.pad_id, int(tr.eval_batch_size), self.device, self.autocast)
            add_final_metrics(metrics, m.final_loss, m.train_enc, m.eval_enc, m.num_labels, self.task)
            if tr.get("save_adapter", True):
                m.peft.save_pretrained(m.run_dir / "adapter")  # PEFT format: adapter_config.json + safetensors
        except Exception as error:  # noqa: BLE001
            self.fail(m, error)
            return
        m.finished = True
        m.log.close()
        examples = (m.max_steps - m.start_step) * int(tr.batch_size)
        m.record.update(
            status="ok", metrics=metrics, params={"trainable": m.trainable, "total": m.total},
            train={"steps": m.max_steps, "resumed_from_step": m.start_step, **m.method.summary(), "events": m.events},
            # train_seconds: this point's share of each packed step (the step's time / points in it).
            cost={"train_seconds": round(m.seconds, 3), "examples_per_second": round(examples / max(m.seconds, 1e-9), 2),
                  "peak_memory_mb": self.memory.mb},
            pack={"size": len(self.members), "index": m.key, "run_ids": [x.record["run_id"] for x in self.members]},
        )
        self.results[m.key] = finish_record(m.record, m.run_dir, m.started)

    # ------------------------------------------------------------ setup
    def load_data(self, m: Member) -> None:
        from .data import DatasetError, load_splits

        try:
            m.splits = load_splits(m.cfg.dataset)
        except DatasetError:
            raise
        except Exception as error:  # as run_point: an unforeseen data problem still names its dataset
            raise DatasetError(str(m.cfg.dataset.name), f"{type(error).__name__}: {error}") from error
        m.num_labels = 0 if self.task == "lm" else m.splits["train"].features["label"].num_classes

    def build_base(self, m: Member) -> None:
        """The shared frozen base, built as the first point's model would be (its seed), quantised for qlora."""
        from .methods import build_method
        from .models import build_model

        torch.manual_seed(int(m.cfg.train.seed))
        self.base, self.tokenizer = build_model(m.cfg.model, self.task, m.num_labels)
        method = build_method(m.cfg.method, m.cfg.model, self.task)
        if hasattr(method, "quantize_base"):
            method.quantize_base(self.base)
        self.base.requires_grad_(False)
        self.base_params = dict(self.base.named_parameters())  # names before any wrapper is attached
        self.pad_id = self.tokenizer.pad_token_id

    def add_member(self, m: Member) -> None:
        """Build the point's model + adapter exactly as run_point would, then hang its adapter on the base."""
        from .methods import build_method
        from .models import build_model, count_parameters
        from .pack_lora import attach_adapter, share_frozen_weights
        from .train import make_optimizer
        from .worker import encode_splits

        tr = m.cfg.train
        torch.manual_seed(int(tr.seed))  # run_point seeds here too (setup_runtime) before building
        model, _ = build_model(m.cfg.model, self.task, m.num_labels)
        m.method = build_method(m.cfg.method, m.cfg.model, self.task)
        m.peft = m.method.wrap(model)
        m.generator = self.dropout_generator()
        share_frozen_weights(m.peft, self.base_params)
        m.peft.to(self.device)
        m.trainable, m.total = count_parameters(m.peft)
        m.optimizer = make_optimizer(m.method.optimizer_parameters(m.peft), tr)
        m.start_step = ckpt.load(m.run_dir, m.peft, m.optimizer, m.method)
        if m.start_step and m.generator.device.type == "cpu":
            m.generator.set_state(torch.get_rng_state())  # the checkpoint holds this point's dropout RNG
        m.max_steps = int(tr.max_steps)
        m.train_enc, m.eval_enc = encode_splits(m.splits, self.tokenizer, tr, self.task)
        m.splits = None
        attach_adapter(self.base, m.key, m.peft, self.ctx, m.generator)
        m.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.truncate_metrics(m.run_dir / METRICS_NAME, m.start_step)
        m.log = open(m.run_dir / METRICS_NAME, "a", encoding="utf-8")

    def dropout_generator(self) -> torch.Generator:
        # On CPU: the global RNG exactly as run_point's training would find it, so LoRA dropout masks match.
        if self.device.type == "cpu":
            generator = torch.Generator()
            generator.set_state(torch.get_rng_state())
            return generator
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(torch.initial_seed()))
        return generator

    def save_checkpoint(self, m: Member, step: int) -> None:
        # sweeper.checkpoint stores the global RNG: lend it this point's dropout RNG for the save.
        saved = torch.get_rng_state()
        if m.generator.device.type == "cpu":
            torch.set_rng_state(m.generator.get_state())
        try:
            m.log.flush()
            ckpt.save(m.run_dir, m.peft, m.optimizer, m.method, step)
        finally:
            torch.set_rng_state(saved)

    # ------------------------------------------------------------ run
    def run(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]]:
        from .pack_lora import PackContext
        from .pack_train import train_packed
        from .worker import PeakMemory, setup_runtime

        if not self.members:
            return self.results
        for m in self.members:
            m.record["started_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.device, self.autocast = setup_runtime(self.members[0].cfg.train)
        self.ctx = PackContext()
        with PeakMemory(self.device) as self.memory:
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
            self.base.to(self.device)
            train_packed(self.base, ready, self.ctx, self.task, self.pad_id, self.device, self.autocast,
                         self.done, self.fail, self.save_checkpoint, should_stop)
        return self.results

    def setup_step(self, fn: Callable[[Member], None], members: list[Member]) -> list[Member]:
        """Run a setup step for each point; one that raises fails alone."""
        for m in members:
            try:
                fn(m)
            except Exception as error:  # noqa: BLE001
                self.fail(m, error)
        return [m for m in members if not m.finished]


def run_packed(cfgs: list[DictConfig], should_stop: Callable[[], bool] = lambda: False) -> list[dict[str, Any]]:
    """Train `cfgs` packed wherever they can share a base (see can_pack); one record per cfg, in order.
    A point that cannot be packed with any other runs alone through run_point."""
    from .worker import run_point

    records: list[dict[str, Any] | None] = [None] * len(cfgs)
    for group in group_points(cfgs, size=len(cfgs)):
        if len(group) == 1:
            records[group[0]] = run_point(cfgs[group[0]], should_stop)
            continue
        for i, record in zip(group, Pack([cfgs[i] for i in group]).run(should_stop)):
            records[i] = record
    return records
