"""One point on several processes (`train.nproc=N`): torch.distributed data parallelism.

Where the ranks come from:
- spawned: a point run by one process (`python -m sweeper`, a local-queue job) starts ranks
  1..N-1 as child processes once it holds the run lock; it is rank 0 itself.
- tasks: a SLURM job of N tasks (submitit's tasks_per_node / nodes; srun starts them): every task
  runs the job; rank 0 runs its points, the others wait to be told which run folder to train
  (`follow_leader`) and train it beside rank 0.
Either way rank 0 alone decides (skip, resume), writes (metrics.jsonl, checkpoints, record) and
evaluates (under FSDP every rank evaluates beside it: sweeper.train.sharding). Every rank builds the same model, loads the same checkpoint and trains its share of each
step's global batch (rows rank::N of `batch_rows`), so the global batch and the sequence of optimizer
updates are the one-process run's, for any rank count: a run resumes with any N.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import traceback
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import Interrupted, TrainingError

TIMEOUT = timedelta(minutes=30)  # a collective waiting longer than this fails (a rank died, or hung)


@dataclass
class World:
    """This process's place among a point's ranks; the one-process world does nothing."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo (CPU) or nccl (CUDA); None: one process
    parallel: str = "ddp"  # train.parallel: ddp (a whole model per rank) or fsdp (sweeper.train.sharding)
    _ddp: tuple[frozenset, nn.Module] | None = field(default=None, repr=False)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """FSDP: every forward is collective, so every rank evaluates and gathers what rank 0 saves."""
        return self.size > 1 and self.parallel == "fsdp"

    def for_point(self, train_cfg) -> World:
        """This world for one point (its train.parallel; a fresh DDP wrapper)."""
        return replace(self, parallel=str(train_cfg.get("parallel", "ddp")), _ddp=None)

    def place(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model on this rank's device: whole (one process, DDP) or as this rank's FSDP shards."""
        if self.sharded:
            from .sharding import shard

            return shard(model, device)
        return model.to(device)

    def shard(self, rows: list[int]) -> list[int]:
        """This rank's rows of a step's global batch."""
        return rows if self.size == 1 else rows[self.rank :: self.size]

    def forward_module(self, model: nn.Module) -> nn.Module:
        """What the training forward goes through: DistributedDataParallel (rebuilt when the set of
        trainable parameters changes, e.g. after a LoRA warm start), or the model itself."""
        if self.size == 1 or self.sharded:
            return model
        trainable = frozenset(id(p) for p in model.parameters() if p.requires_grad)
        if self._ddp is None or self._ddp[0] != trainable:  # DDP's constructor broadcasts rank 0's weights
            # find_unused_parameters: a trainable weight off the forward path (PEFT's kept original of
            # a wrapped head during a full-rank warm start) would otherwise stall the gradient reduction.
            ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            self._ddp = (trainable, ddp)
        return self._ddp[1]

    def mean(self, value: float) -> float:
        """The mean of `value` over the ranks (every rank gets it)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item()) / self.size

    def from_main(self, *flags: bool) -> tuple[bool, ...]:
        """Rank 0's flags (stop asked, early stop) on every rank: the ranks leave the loop together."""
        return tuple(bool(x) for x in self.values_from_main(*map(float, flags)))

    def values_from_main(self, *values: float) -> tuple[float, ...]:
        """Rank 0's numbers on every rank (a validation score every rank then decides on alike)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.broadcast(t, src=0)
        return tuple(t.tolist())

    def sync(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank (after a method changed weights in place)."""
        if self.size == 1:
            return
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (on every rank)."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def step_seed(self, seed: int, step: int, shared: bool) -> None:
        """Seed this step's random draws from (seed, step): per rank for the forward (dropout differs
        across shards), the same on every rank for a method's hook (a ReLoRA re-init is then the
        same on any rank count, one process included). A resumed run draws what an uninterrupted
        one did, whatever ran before."""
        torch.manual_seed(step_seed(seed, step, 0 if shared else self.rank + 1))

    def _device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" else torch.device("cpu")


def step_seed(seed: int, step: int, stream: int) -> int:
    """The seed of `stream` at `step` (0: shared by all ranks; r + 1: rank r's forward). The packed
    loop seeds each adapter's dropout generator with stream 1, as a one-process run does."""
    return int(np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1)[0])


SOLO = World()
_JOB_WORLD: World | None = None  # tasks mode: the SLURM job's process group, set by join_job_tasks
_JOB_BROKEN = False  # tasks mode: a point failed while the ranks trained it (see job_broken)


def device_type(train_cfg) -> str:
    name = str(train_cfg.device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def check_nproc(train_cfg, method) -> int:
    """train.nproc as an int; a one-line TrainingError for a setting that cannot run."""
    nproc = train_cfg.get("nproc", 1)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise TrainingError(f"train.nproc must be an integer >= 1, got {nproc!r}")
    if nproc == 1:
        return 1
    if method.base_in_4bit:
        raise TrainingError(
            f"method={method.name} with train.nproc > 1 is not supported (4-bit bitsandbytes weights under DDP)"
        )
    if int(train_cfg.batch_size) < nproc:
        raise TrainingError(f"train.batch_size={train_cfg.batch_size} is smaller than train.nproc={nproc}")
    kind = device_type(train_cfg)
    slots = torch.cuda.device_count() if kind == "cuda" else len(os.sched_getaffinity(0))
    if _JOB_WORLD is None and nproc > slots:
        unit = "GPU(s)" if kind == "cuda" else "CPU core(s)"
        raise TrainingError(f"train.nproc={nproc} is more than the {slots} {unit} this point was given")
    if _JOB_WORLD is not None and _JOB_WORLD.size != nproc:
        raise TrainingError(f"train.nproc={nproc} but this SLURM job has {_JOB_WORLD.size} task(s)")
    return nproc


# ---------------------------------------------------------------- starting the ranks of a point
@contextlib.contextmanager
def ranks(cfg, run_dir, follower_main) -> World:
    """Rank 0's world for one point: the job's tasks (told to follow run_dir), N-1 spawned
    children running `follower_main(cfg, run_dir, world)`, or SOLO for nproc=1."""
    global _JOB_BROKEN
    nproc = int(cfg.train.get("nproc", 1))
    if _JOB_WORLD is not None:
        dist.broadcast_object_list([(cfg, str(run_dir))], src=0)
        try:
            yield _JOB_WORLD.for_point(cfg.train)
        except Interrupted:  # the other ranks saw the stop too: still in step
            raise
        except BaseException:
            _JOB_BROKEN = True  # the ranks may be out of step: the job ends after this point's record
            raise
        return
    if nproc == 1:
        yield SOLO
        return
    backend = "nccl" if device_type(cfg.train) == "cuda" else "gloo"
    port = _free_port()
    context = torch.multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_spawned_rank, args=(follower_main, cfg, str(run_dir), r, nproc, backend, port))
        for r in range(1, nproc)
    ]
    for child in children:
        child.start()
    try:
        _init(backend, 0, nproc, f"tcp://127.0.0.1:{port}", 0)
        yield World(0, nproc, 0, backend).for_point(cfg.train)
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.terminate()


def _spawned_rank(follower_main, cfg, run_dir: str, rank: int, size: int, backend: str, port: int) -> None:
    try:
        _init(backend, rank, size, f"tcp://127.0.0.1:{port}", rank)
        follower_main(cfg, run_dir, World(rank, size, rank, backend))
    except BaseException:  # noqa: BLE001  say why in this rank's stderr; rank 0's collective then fails
        traceback.print_exc(file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _init(backend: str, rank: int, size: int, init_method: str, local_rank: int) -> None:
    if backend == "nccl":  # the GPU setup_runtime gives this rank (its local rank among the visible ones)
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=size, timeout=TIMEOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- tasks mode (SLURM srun)
def join_job_tasks(use_cuda: bool) -> World | None:
    """In a submitit job of several tasks: one process group for the whole job (rank = task);
    None in a one-task job."""
    global _JOB_WORLD
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return None
    dist_env = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    backend = "nccl" if use_cuda and torch.cuda.is_available() else "gloo"
    _init(backend, dist_env.rank, dist_env.world_size, "env://", dist_env.local_rank)
    _JOB_WORLD = World(dist_env.rank, dist_env.world_size, dist_env.local_rank, backend)
    return _JOB_WORLD


def follow_leader(world: World, follower_main) -> None:
    """Ranks > 0 of a job: train each run folder rank 0 names, until it says the job is done."""
    while True:
        message: list[Any] = [None]
        dist.broadcast_object_list(message, src=0)
        if message[0] is None:
            return
        cfg, run_dir = message[0]
        try:
            follower_main(cfg, run_dir, world)
        except Exception:  # rank 0 fails this point too and ends the job (job_broken)
            traceback.print_exc(file=sys.stderr)
            raise SystemExit(1) from None


def job_broken() -> bool:
    """Tasks mode, rank 0: a point failed while the ranks trained it, so they may wait in different
    collectives; the job must end (its remaining points are reported lost and re-run on relaunch)."""
    return _JOB_BROKEN


def release_followers() -> None:
    """Rank 0 of a job, at its end: tell the other tasks there is nothing more to train."""
    global _JOB_WORLD
    if _JOB_WORLD is not None and _JOB_WORLD.main and not _JOB_BROKEN:
        dist.broadcast_object_list([None], src=0)
    _JOB_WORLD = None
    with contextlib.suppress(Exception):
        dist.destroy_process_group()
