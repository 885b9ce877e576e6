"""Following a submitted sweep: report each point as its record appears (failures at once), and
settle jobs that ended, writing a `failed` record for points whose job died without one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ledger import array_id, log_launch
from ..records import RECORD_NAME, Status, read_existing, summary_line
from .backends import Slot
from .planner import Point, write_lost_record


@dataclass
class Running:
    job: Any
    points: list[Point]
    slot: Slot | None = None
    gone_since: float | None = None  # when SLURM first said the job ended, no result file yet


@dataclass
class Monitor:
    """Reports points as their records appear; settles jobs that ended."""

    total: int
    backend: Any
    grace_s: float = 10.0  # a job the scheduler says ended gets this long for its result file to show
    reported: set = field(default_factory=set)
    ok: int = 0
    failed: list = field(default_factory=list)

    def check_records(self, points: Sequence[Point]) -> None:
        for p in points:
            if p.run_dir is None or p.idx in self.reported:
                continue
            path = p.run_dir / RECORD_NAME
            try:
                fresh = path.stat().st_mtime >= p.since
            except OSError:
                continue
            record = read_existing(p.run_dir) if fresh else None
            if record is not None and record["status"] in (Status.OK, Status.FAILED):
                self._report(p, record, summary_line(record))

    def _report(self, point: Point, record: dict, line: str) -> None:
        self.reported.add(point.idx)
        if record["status"] == Status.OK:
            self.ok += 1
        else:
            self.failed.append((point, record.get("error")))
        print(f"[{len(self.reported)}/{self.total}] {line}", flush=True)

    def settle(self, run: Running) -> bool:
        """True once `run`'s job is over and each of its points is reported (lost ones get a record)."""
        job = run.job
        if not self.backend.ended(job):
            return False
        self.check_records(run.points)
        missing = [p for p in run.points if p.idx not in self.reported]
        if not missing:
            return True
        completed = False
        if job.paths.result_pickle.exists():
            try:
                outcomes = job.result()
                completed = True
                errors = [o.get("error") for o in outcomes if o.get("error")]
                reason = f"job {job.job_id}: {errors[0]}" if errors else f"job {job.job_id} finished without a record"
            except Exception as error:  # noqa: BLE001  the job raised (e.g. not requeued after a timeout)
                lines = [line for line in str(error).splitlines() if line.strip()]
                reason = f"job {job.job_id} failed: {lines[-1] if lines else type(error).__name__}"
        else:
            run.gone_since = run.gone_since or time.time()
            if time.time() - run.gone_since < self.grace_s:
                return False  # the result file may still be on its way (slow shared filesystem)
            reason = self.backend.lost_reason(job)
        for p in missing:
            record = read_existing(p.run_dir) if completed and p.run_dir is not None else None
            if record is not None:  # the job found it done already (another launch finished it)
                self._report(p, record, summary_line(record))
                continue
            if write_lost_record(p, reason):
                self.check_records([p])
            if p.idx not in self.reported:  # no config or no record could be written: report anyway
                self._report(p, {"status": Status.FAILED, "error": reason}, f"[FAILED] {p.label}: {reason}")
        return True


def watch(
    backend,
    jobs: list[list[Point]],
    make_fn: Callable[[list[Point]], Any],
    launch: dict,
    results_dir: Path,
    total: int,
    poll_s: float,
) -> Monitor:
    """Submit (all at once, or as slots free up) and follow the jobs to the end."""
    monitor = Monitor(total=total, backend=backend)
    queue, active = list(jobs), []
    if backend.capacity is None:
        submitted = backend.submit_all([make_fn(points) for points in queue])
        active = [Running(job, points) for job, points in zip(submitted, queue)]
        queue = []
        log_jobs(launch, active)
    free = [] if backend.capacity is None else list(backend.slots)
    try:
        while queue or active:
            started = []
            while queue and free:
                points = queue.pop(0)
                slot = free.pop(0)
                started.append(Running(backend.submit(make_fn(points), slot), points, slot))
            if started:
                active += started
                log_jobs(launch, started)
            for run in list(active):
                monitor.check_records(run.points)
                if monitor.settle(run):
                    active.remove(run)
                    if run.slot is not None:
                        free.append(run.slot)
            if queue or active:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        if backend.kind == "local":
            for run in active:
                run.job.cancel(check=False)
            print(
                f"\ninterrupted: cancelled {len(active)} local job(s); run the same command again to resume", flush=True
            )
        else:
            ids = sorted({array_id(r.job.job_id) for r in active})
            print(
                f"\ninterrupted: the SLURM jobs keep running (scancel {' '.join(ids)} stops them); "
                f"python -m sweeper.status {results_dir}",
                flush=True,
            )
        raise SystemExit(130) from None  # no traceback: the message says it all
    return monitor


def save_launch(launch: dict, update: bool = True) -> None:
    """Write the launch entry to sweep.json in every results folder the grid writes to."""
    for results_dir in launch["results_dirs"]:
        log_launch(Path(results_dir), launch, update=update)


def log_jobs(launch: dict, runs: Sequence[Running]) -> None:
    launch["jobs"] += [{"job_id": str(r.job.job_id), "run_ids": [p.run_id for p in r.points]} for r in runs]
    save_launch(launch)
