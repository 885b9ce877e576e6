"""Where the jobs of a sweep run: a local queue of worker processes (one GPU or a share of the CPU
threads each) or SLURM job arrays (split at the cluster's MaxArraySize). Both are submitit executors;
sweeper.launch.driver plans the points, builds the jobs and watches them through these two classes."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import environment_variables

from .. import shell
from ..ledger import array_id


@dataclass
class Slot:
    index: int
    gpu: int | None
    threads: int


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
    return [Slot(k, devices[k % len(devices)] if devices else None, per) for k in range(n)]


class LocalQueue:
    """N worker processes on this machine (submitit LocalExecutor: USR2 on timeout, requeue)."""

    kind = "local"

    def __init__(self, folder: Path, params: Any):
        self.slots = local_slots(params.workers, params.gpus, params.threads)
        self.executor = submitit.LocalExecutor(folder=str(folder), max_num_timeout=int(params.max_num_timeout))
        self.executor.update_parameters(
            timeout_min=float(params.timeout_min), signal_delay_s=int(params.signal_delay_s)
        )

    @property
    def capacity(self) -> int:
        return len(self.slots)

    def describe(self) -> str:
        slots = ", ".join(f"gpu {s.gpu}" if s.gpu is not None else f"{s.threads} thread(s)" for s in self.slots)
        return f"local queue: {len(self.slots)} worker(s) [{slots}]"

    def submit(self, fn: Callable[[], Any], slot: Slot):
        gpu = [] if slot.gpu is None else [slot.gpu]
        self.executor.update_parameters(visible_gpus=gpu, gpus_per_node=len(gpu))  # CUDA_VISIBLE_DEVICES
        threads = str(slot.threads)
        with environment_variables(
            SWEEPER_SLOT=str(slot.index),
            SWEEPER_THREADS=threads,
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            TOKENIZERS_PARALLELISM="false",
        ):
            return self.executor.submit(fn)

    def ended(self, job) -> bool:
        return job.done()

    def lost_reason(self, job) -> str:
        return f"job {job.job_id} (local) ended without a result; see {job.paths.stderr}"


def max_array_size(override: int | None = None) -> int:
    """Tasks per job array: the cluster's MaxArraySize (`scontrol show config`), unless overridden."""
    if override:
        return int(override)
    out = shell.output(["scontrol", "show", "config"], timeout=30) or ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return 1001  # SLURM's default


# launcher config key -> submitit SlurmExecutor parameter
_SLURM_KEYS = {
    "partition": "partition",
    "timeout_min": "time",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_task": "gpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "gres": "gres",
    "qos": "qos",
    "account": "account",
    "constraint": "constraint",
    "exclude": "exclude",
    "nodelist": "nodelist",
    "array_parallelism": "array_parallelism",
    "signal_delay_s": "signal_delay_s",
    "name": "job_name",
    "comment": "comment",
    "srun_args": "srun_args",
    "additional_parameters": "additional_parameters",
    "stderr_to_stdout": "stderr_to_stdout",
}


class SlurmArrays:
    """One SLURM job array per sweep (several when the grid exceeds MaxArraySize)."""

    kind = "slurm"
    capacity = None  # everything is submitted at once; SLURM (array_parallelism) does the queueing

    def __init__(self, folder: Path, params: Any):
        self.params = params
        self.executor = submitit.SlurmExecutor(
            folder=str(folder), max_num_timeout=int(params.max_num_timeout), python=params.python
        )
        kwargs = {dst: params[src] for src, dst in _SLURM_KEYS.items() if params[src] not in (None, "", [], {})}
        if params.mem_gb:
            kwargs["mem"] = f"{int(params.mem_gb)}GB"
        cpus = int(params.cpus_per_task or 1)
        threads = (
            f"export SWEEPER_THREADS={cpus} OMP_NUM_THREADS={cpus} MKL_NUM_THREADS={cpus} TOKENIZERS_PARALLELISM=false"
        )
        kwargs["setup"] = [threads, *(params.setup or [])]
        self.executor.update_parameters(**kwargs)
        self.array_size = max_array_size(params.max_array_size)

    def describe(self) -> str:
        p = self.executor.parameters
        return (
            f"slurm: partition {p.get('partition', '(default)')}, {p.get('time')} min, "
            f"{p.get('cpus_per_task', 1)} cpu(s)/task, at most {self.array_size} tasks per array"
        )

    def submit_all(self, fns: Sequence[Callable[[], Any]]) -> list:
        self._submitted, self._squeue_at, self._queued = time.time(), 0.0, set()
        jobs = []
        for start in range(0, len(fns), self.array_size):
            jobs.extend(self.executor.submit_array(list(fns[start : start + self.array_size])))
        return jobs

    def ended(self, job) -> bool:
        """Result file, or a final state in sacct; without accounting (state UNKNOWN), a job that
        squeue no longer lists a minute after submission has ended too (else we would wait forever)."""
        if job.done():
            return True
        if job.state.upper() != "UNKNOWN" or time.time() - self._submitted < 60:
            return False
        if time.time() - self._squeue_at > 30:
            out = shell.output(["squeue", "-h", "-o", "%i"], timeout=60)
            if out is None:
                return False
            self._queued, self._squeue_at = set(out.split()), time.time()
        array = array_id(job.job_id)  # a pending array shows as 123_[4-9%2]
        return job.job_id not in self._queued and not any(q.startswith(array + "_[") for q in self._queued)

    def lost_reason(self, job) -> str:
        state = job.state
        if state.upper() == "UNKNOWN":  # submitit's cached state may predate the end: ask sacct once more
            try:
                state = job.get_info(mode="force").get("State") or state
            except Exception:  # noqa: BLE001  no accounting: said below
                pass
        if state.upper() != "UNKNOWN":
            return f"job {job.job_id} {state}"
        out = shell.output(["sacct", "-n", "-P", "-X", "-j", str(job.job_id), "-o", "JobID"], timeout=60)
        if out is not None and not out.strip():
            # Accounting works but never saw this task: it left the pending array without starting,
            # which only scancel does (SLURM keeps no record of a pending array task cancelled alone).
            return f"job {job.job_id} CANCELLED before it started (removed from the pending array)"
        return f"job {job.job_id} left the queue without a result (state unknown: is SLURM accounting on?)"
