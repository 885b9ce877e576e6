"""Who runs a point, handed explicitly from the job to the worker: job id, launcher slot, CPU
threads, the stop request (SLURM's USR2 / SIGTERM), and the tracker options.

    ctx = PointContext.in_job(job_id, should_stop=stop.requested)     # launch.job, once per job
    run_point(cfg, ctx)                                               # solo
    run_packed(cfgs, ctx)                                             # packed

`in_job` is the one place that reads what a launcher leaves in a job's environment (the local
queue's slot and thread share, SLURM's setup line); below it nothing reads environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace


def never() -> bool:
    return False


@dataclass(frozen=True)
class PointContext:
    job_id: str | None = None  # the submitit job (the ledger's "started" marker, the record's worker)
    cluster_job: str | None = None  # SLURM_JOB_ID of the allocation this process runs in (the record's worker)
    slot: str | None = None  # the local queue's slot
    threads: int | None = None  # the launcher's CPU-thread share (train.threads overrides it)
    should_stop: Callable[[], bool] = never  # true once the job was asked to stop: checkpoint, then Interrupted

    @classmethod
    def in_job(cls, job_id: str | None, should_stop: Callable[[], bool] = never) -> PointContext:
        threads = os.environ.get("SWEEPER_THREADS")
        return cls(
            job_id=job_id or None,
            cluster_job=os.environ.get("SLURM_JOB_ID") or None,
            slot=os.environ.get("SWEEPER_SLOT") or None,
            threads=int(threads) if threads else None,
            should_stop=should_stop,
        )

    def with_job(self, job_id: str) -> PointContext:
        return replace(self, job_id=job_id)


SOLO = PointContext()  # Hydra's basic launcher, a test, a notebook: no job, no stop request
