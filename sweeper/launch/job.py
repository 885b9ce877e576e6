"""The job side of a sweep: one submitit job runs a few grid points in one process.

SLURM's USR2 (time limit or preemption) sets the job's `StopRequest`, which each point polls as
`PointContext.should_stop`: the training loop checkpoints at the end of the step and raises
`Interrupted`; the job then lets submitit requeue it, and the new attempt resumes from
`<run_dir>/checkpoint`. SIGTERM (scontrol requeue, scancel) also checkpoints, then training goes on
until SLURM kills the job. Solo points run through Hydra's `run_job` with `train.point.point_task`
and the job's PointContext; packs through `train.pack.run_packed` with the same context.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cloudpickle
import submitit
from omegaconf import open_dict, read_write

from ..config import job_config, task_config
from ..records import Status
from .planner import Point


# ---------------------------------------------------------------- stop requests inside a job
class StopRequest:
    """USR2 / SIGTERM turned into flags the training loop polls between steps (PointContext.should_stop).
    One per job call; never pickled (a requeued job installs its own)."""

    def __init__(self):
        self.requeue_asked = self.term_asked = False
        self._submitit_handler = None

    def requested(self) -> bool:
        """True once the job was asked to stop (USR2: checkpoint and requeue; SIGTERM: checkpoint)."""
        return self.requeue_asked or self.term_asked

    def install(self) -> StopRequest:
        self._submitit_handler = signal.getsignal(_preempt_signal())
        signal.signal(_preempt_signal(), lambda *_: setattr(self, "requeue_asked", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "term_asked", True))
        return self

    def requeue(self) -> None:
        """Run submitit's own USR2 handler (checkpoint this job object, requeue it, exit) now that we are ready."""
        if callable(self._submitit_handler):
            self._submitit_handler(_preempt_signal(), None)  # exits (requeued) or raises (not requeued)
        raise SystemExit("stop requested and no submitit handler to requeue this job")

    def after_interrupt(self) -> None:
        """USR2: requeue now. SIGTERM: the checkpoint is written; go on (training resumes from it)."""
        if self.requeue_asked:
            self.requeue()
        self.term_asked = False


def _preempt_signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def submitit_job_id() -> str | None:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job
        return None


def current_job_id() -> str | None:
    """The id a backend's task set (Ray: its task id), else submitit's (local queue, SLURM). The
    task's own first: a Ray cluster started inside a SLURM job hands SLURM's variables to its workers."""
    return os.environ.get("SWEEPER_JOB_ID") or submitit_job_id()


# ---------------------------------------------------------------- the job
class JobContext:
    """What every job of a launch shares (Hydra's context and singletons, the task function, the
    sweep's config), pickled once per launch into the sweep folder: a job's own pickle then holds
    only its points, and 10,000 jobs are not 10,000 pickles of the whole config."""

    def __init__(self, path: Path | None):
        self.path = path
        self._loaded: dict[str, Any] | None = None

    @classmethod
    def save(cls, sweep_dir: Path, hydra_context, task_function, config) -> JobContext:
        from hydra.core.singleton import Singleton

        path = Path(sweep_dir) / ".submitit" / f"context-{os.getpid()}-{time.time_ns()}.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        shared = {"hydra_context": hydra_context, "task_function": task_function, "config": config}
        payload = cloudpickle.dumps({**shared, "singleton_state": Singleton.get_state()})
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
        return cls(path)

    def __getstate__(self) -> dict[str, Any]:
        if self.path is None:  # an inline context (a job pickled before contexts were shared)
            return dict(self.__dict__)
        return {"path": self.path, "_loaded": None}  # jobs pickle the path, never the content

    def __getitem__(self, key: str) -> Any:
        if self._loaded is None:
            self._loaded = pickle.loads(self.path.read_bytes())
        return self._loaded[key]


class PointsJob(submitit.helpers.Checkpointable):
    """One submitit job: a few grid points, run one after the other in this process.

    submitit's checkpoint() pickles this object as it is; that is enough, because the progress
    lives on disk (records of finished points are skipped, the current point resumes from its
    checkpoint)."""

    def __init__(self, context: JobContext, points: Sequence[Point]):
        self.context, self.points = context, list(points)

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "context" not in state:  # pickled before 2026-12-03 (a job requeued across an upgrade)
            inline = JobContext(None)
            inline._loaded = {k: state.pop(k) for k in ("hydra_context", "task_function", "config", "singleton_state")}
            state["context"] = inline
        self.__dict__.update(state)

    @property
    def config(self):
        return self.context["config"]

    def __call__(self) -> list[dict[str, Any]]:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals

        from ..train.context import PointContext

        Singleton.set_state(self.context["singleton_state"])
        setup_globals()
        stop = StopRequest().install()
        job_id = current_job_id()
        ctx = PointContext.in_job(job_id, should_stop=stop.requested)
        in_submitit = not os.environ.get("SWEEPER_JOB_ID") and submitit_job_id()
        tasks = self._join_tasks() if in_submitit else None  # SLURM tasks of one job: their ranks
        if tasks is not None and not tasks.main:
            return self._follow(tasks)
        outcomes: list[dict[str, Any]] = []
        try:
            for group in self._groups():
                if stop.requeue_asked and outcomes:
                    stop.requeue()  # between points: nothing to checkpoint
                if len(group) == 1:
                    outcomes.append(self._run_point(group[0], ctx, stop))
                else:
                    outcomes.extend(self._run_pack(group, ctx, stop))
                if tasks is not None and _tasks_broken():
                    raise SystemExit(
                        "a point failed while this job's tasks trained it; its other points re-run on relaunch"
                    )
        finally:
            if tasks is not None:
                from ..train import distributed

                distributed.release_followers()
        return outcomes

    def _join_tasks(self):
        """A job of several SLURM tasks (points of train.nproc=N): this task's rank, or None in a one-task job."""
        from ..train import distributed

        return distributed.join_job_tasks(distributed.device_type(self._task_config(self.points[0]).train) == "cuda")

    def _follow(self, world) -> list[dict[str, Any]]:
        """Tasks > 0: train beside task 0 each point it trains; it writes every record."""
        from ..train import distributed
        from ..train.point import follow_point

        distributed.follow_leader(world, follow_point)
        return []

    def _full_config(self, point: Point, job_id: str | None):
        return job_config(self.config, point.overrides, point.config, point.choices, point.idx, job_id)

    def _task_config(self, point: Point, job_id: str | None = None):
        return with_run_id(task_config(self._full_config(point, job_id)), point)

    def _groups(self) -> list[list[Point]]:
        """Points one by one; with sweeper.pack=K, packable LoRA points of this job in packs of <= K."""
        pack = int(self.config.sweeper.pack or 1)
        if pack <= 1 or len(self.points) == 1:
            return [[p] for p in self.points]
        from ..train.pack import group_points  # the job side only: torch

        cfgs = [self._task_config(p) for p in self.points]
        return [[self.points[i] for i in idx] for idx in group_points(cfgs, size=pack)]

    def _run_pack(self, points: list[Point], ctx, stop: StopRequest) -> list[dict[str, Any]]:
        """K points on one shared base, one forward per step (sweeper.pack; docs/packing.md)."""
        from ..train import Interrupted
        from ..train.pack import run_packed

        cfgs = [self._task_config(p) for p in points]
        while True:
            try:
                records = run_packed(cfgs, ctx)
                break
            except Interrupted:  # checkpoints written; the next attempt resumes every member
                stop.after_interrupt()
        return [{"idx": p.idx, "run_id": p.run_id, "status": str(r["status"])} for p, r in zip(points, records)]

    def _run_point(self, point: Point, ctx, stop: StopRequest) -> dict[str, Any]:
        """One point through Hydra's run_job (its job folder, logging, callbacks) with this job's context."""
        from hydra.core.utils import JobStatus, run_job

        from ..train import Interrupted
        from ..train.point import point_task

        config = with_run_id(self._full_config(point, ctx.job_id or f"job{point.idx}"), point)
        while True:
            ret = run_job(
                hydra_context=self.context["hydra_context"],
                task_function=functools.partial(point_task, ctx=ctx),
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Interrupted):
                stop.after_interrupt()
                continue
            break
        if ret.status == JobStatus.COMPLETED:
            return {"idx": point.idx, "run_id": point.run_id, "status": str(ret._return_value)}
        return {
            "idx": point.idx,
            "run_id": point.run_id,
            "status": str(Status.FAILED),
            "error": f"{type(ret._return_value).__name__}: {ret._return_value}",
        }


def _tasks_broken() -> bool:
    from ..train import distributed

    return distributed.job_broken()


def with_run_id(config, point: Point):
    """The planner's run id travels with the point (sweeper.run_id): the worker writes where the
    launcher watches, even if an input file changed between planning and the job's start."""
    if point.run_id is not None:
        with read_write(config), open_dict(config):
            config.sweeper.run_id = point.run_id
    return config
