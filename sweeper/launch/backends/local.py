"""`hydra/launcher=local`: a queue of worker processes on this machine (submitit's LocalExecutor),
one GPU or a share of the CPU threads each; the monitor starts a job whenever a slot frees up."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import environment_variables

from ... import shell
from ..options import OptionError
from .base import Backend, JobResult, register, submitit_result


@dataclass
class Slot:
    index: int
    gpus: tuple[int, ...]  # CUDA_VISIBLE_DEVICES of the job (one GPU; N for a point of train.nproc=N)
    threads: int  # CPU threads of each of the job's processes


def visible_gpus(spec: Any) -> list[int]:
    """`auto`: CUDA_VISIBLE_DEVICES if set, else nvidia-smi's list; or an explicit list / count."""
    if spec is None or spec == "auto":
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is not None:
            return [int(x) for x in env.split(",") if x.strip().isdigit()]
        out = shell.output(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], timeout=20)
        return [int(x) for x in out.split() if x.isdigit()] if out is not None else []
    if isinstance(spec, int):
        return list(range(spec))
    return [int(x) for x in spec]


def local_slots(workers: int | None, gpus: Any, threads: int | None) -> list[Slot]:
    """One slot per worker: GPU k (one job per GPU; round robin if workers > GPUs), and
    cores // workers CPU threads (SWEEPER_THREADS / OMP_NUM_THREADS)."""
    devices = visible_gpus(gpus)
    cores = len(os.sched_getaffinity(0))
    n = int(workers) if workers else (len(devices) or max(1, cores // 2))
    per = int(threads) if threads else max(1, cores // n)
    return [Slot(k, (devices[k % len(devices)],) if devices else (), per) for k in range(n)]


class SlotError(OptionError):
    """The local queue cannot give a point its train.nproc processes (one line)."""


def rank_slots(slots: list[Slot], nproc: int, threads: int | None) -> list[Slot]:
    """Slots for points of train.nproc=N: N distinct GPUs each (or, on CPU, N processes sharing
    the cores: `threads` each if given, else cores // (slots x N))."""
    if nproc <= 1:
        return slots
    gpus = list(dict.fromkeys(g for s in slots for g in s.gpus))
    cores = len(os.sched_getaffinity(0))
    if gpus:
        if len(gpus) < nproc:
            raise SlotError(f"train.nproc={nproc} needs {nproc} GPUs per point; the local queue has {len(gpus)}")
        n = min(len(slots), len(gpus) // nproc)
        per = int(threads) if threads else max(1, cores // (n * nproc))
        return [Slot(k, tuple(gpus[k * nproc : (k + 1) * nproc]), per) for k in range(n)]
    if cores < nproc:
        raise SlotError(f"train.nproc={nproc} is more than the {cores} CPU core(s) of this machine")
    n = max(1, min(len(slots), cores // nproc))
    per = int(threads) if threads else max(1, cores // (n * nproc))
    return [Slot(k, (), per) for k in range(n)]


@register
class LocalQueue(Backend):
    """N worker processes on this machine (submitit LocalExecutor: USR2 on timeout, requeue)."""

    name = "local"
    POSITIVE = {"workers": True, "threads": True, "timeout_min": False, "poll_s": False}

    def __init__(self, folder: Path, params: Any):
        self.params = params
        self.slots = local_slots(params.workers, params.gpus, params.threads)
        self.free = list(self.slots)
        self.slot_of: dict[str, Slot] = {}
        self.executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=int(params.max_num_timeout))
        self.executor.update_parameters(
            timeout_min=float(params.timeout_min), signal_delay_s=int(params.signal_delay_s)
        )

    @classmethod
    def dry_run_where(cls, params: Any, jobs: int) -> str:
        return "on the local queue"

    def prepare(self, nproc: int, jobs: int) -> None:
        """Size the slots for points of train.nproc=nproc (the largest of the sweep); SlotError if none fits."""
        self.slots = rank_slots(self.slots, nproc, self.params.threads)
        self.free = list(self.slots)

    def describe(self) -> str:
        def one(s: Slot) -> str:
            return "gpu " + "+".join(map(str, s.gpus)) if s.gpus else f"{s.threads} thread(s)"

        return f"local queue: {len(self.slots)} worker(s) [{', '.join(one(s) for s in self.slots)}]"

    def room(self) -> int:
        return len(self.free)

    def submit(self, fns: Sequence[Callable[[], Any]], nproc: int = 1) -> list:
        return [self._start(fn, self.free.pop(0)) for fn in fns]

    def _start(self, fn: Callable[[], Any], slot: Slot):
        gpus = list(slot.gpus)
        self.executor.update_parameters(visible_gpus=gpus, gpus_per_node=len(gpus))  # CUDA_VISIBLE_DEVICES
        threads = str(slot.threads)
        with environment_variables(
            SWEEPER_SLOT=str(slot.index),
            SWEEPER_THREADS=threads,
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            TOKENIZERS_PARALLELISM="false",
        ):
            job = self.executor.submit(fn)
        self.slot_of[str(job.job_id)] = slot
        return job

    def release(self, job) -> None:
        slot = self.slot_of.pop(str(job.job_id), None)
        if slot is not None:
            self.free.append(slot)

    def ended(self, job) -> bool:
        return job.done()

    def result(self, job) -> JobResult | None:
        return submitit_result(job)

    def lost_reason(self, job) -> str:
        return f"job {job.job_id} (local) ended without a result; see {job.paths.stderr}"

    def interrupt(self, jobs: Sequence, results_dir: Path) -> str:
        for job in jobs:
            job.cancel(check=False)
        return f"interrupted: cancelled {len(jobs)} local job(s); run the same command again to resume"

    def detach(self, queue: list, make_job: Callable, entry: dict, results_dir: Path, total: int, sweep_dir: Path):
        """Fork a monitor that runs the local queue to the end, in its own session, logging to a file."""
        from ..monitor import save_launch, watch

        log_path = sweep_dir / "monitor.log"
        sys.stdout.flush()
        sys.stderr.flush()
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(ready_w)
            os.read(ready_r, 1)  # the child has recorded itself in sweep.json (or died: EOF)
            os.close(ready_r)
            print(
                f"detached: local queue running in process {pid} (log {log_path}); "
                f"follow with: python -m sweeper.status {results_dir}",
                flush=True,
            )
            return
        code = 0
        try:
            os.close(ready_r)
            os.setsid()
            fd = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            entry["monitor"] = {"pid": os.getpid(), "host": socket.gethostname(), "log": str(log_path)}
            save_launch(entry)
            os.write(ready_w, b"1")
            os.close(ready_w)
            monitor = watch(self, [], queue, make_job, entry, results_dir, total, float(self.params.poll_s))
            print(f"sweep done: {monitor.ok} ok, {len(monitor.failed)} failed", flush=True)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
