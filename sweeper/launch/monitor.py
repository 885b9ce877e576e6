"""Following a submitted sweep: report each point as its record appears (failures at once), and
settle jobs that ended, writing a `failed` record for points whose job died without one."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ledger
from ..ledger import log_launch
from ..records import Status, read_existing, record_signature
from ..summary import summary_line
from .planner import Point, write_lost_record


@dataclass
class Running:
    job: Any
    points: list[Point]
    gone_since: float | None = None  # when the engine first said the job ended, no result yet


@dataclass
class Monitor:
    """Reports points as their records appear; settles jobs that ended."""

    total: int
    backend: Any  # a backends.Backend
    reported: set = field(default_factory=set)
    ok: int = 0
    busy: int = 0  # points another launch was training (their lock was held): not failures
    failed: list = field(default_factory=list)

    def check_records(self, points: Sequence[Point]) -> None:
        for p in points:
            if p.run_dir is None or p.idx in self.reported or record_signature(p.run_dir) == p.prior:
                continue  # no record yet, or still the one planning found (a failure being retried)
            record = read_existing(p.run_dir)
            if record is not None and record["status"] in (Status.OK, Status.FAILED):
                self._report(p, record, summary_line(record))

    def _report(self, point: Point, record: dict, line: str) -> None:
        self.reported.add(point.idx)
        if record["status"] == Status.OK:
            self.ok += 1
        elif record["status"] != Status.BUSY:
            self.failed.append((point, record.get("error")))
        print(f"[{len(self.reported)}/{self.total}] {line}", flush=True)

    def settle(self, run: Running) -> bool:
        """True once `run`'s job is over and each of its points is reported. The job's own outcome
        decides: a point it returned ok (or busy: trained elsewhere) never gets a lost record, even
        while its record is not visible here yet; a lost record is only ever created, never replaced."""
        job = run.job
        if not self.backend.ended(job):
            return False
        self.check_records(run.points)
        missing = [p for p in run.points if p.idx not in self.reported]
        if not missing:
            return True
        outcomes: dict[int, dict] = {}
        result = self.backend.result(job)
        if result is not None and result.outcomes is not None:
            outcomes = {o["idx"]: o for o in result.outcomes}
            errors = [o.get("error") for o in outcomes.values() if o.get("error")]
            reason = f"job {job.job_id}: {errors[0]}" if errors else f"job {job.job_id} finished without a record"
        elif result is not None:
            reason = str(result.error)
        else:
            run.gone_since = run.gone_since or time.time()
            if time.time() - run.gone_since < self.backend.result_grace_s:
                return False  # the result file may still be on its way (slow shared filesystem)
            reason = self.backend.lost_reason(job)
        for p in missing:
            self._settle_point(p, outcomes.get(p.idx), reason)
        return True

    def _settle_point(self, p: Point, outcome: dict | None, reason: str) -> None:
        status = (outcome or {}).get("status")
        if status == Status.BUSY:
            self.busy += 1
            self._report(p, {"status": Status.BUSY}, f"[busy] {p.label}: trained by another launch, which records it")
            return
        if status in (Status.OK, Status.FAILED) and outcome.get("error") is None:
            record = read_existing(p.run_dir) if p.run_dir is not None else None
            record = record or {"status": status, "error": None}  # written, not visible here yet (NFS)
            line = summary_line(record) if "run_id" in record else f"[{status}] {p.label} (record not visible yet)"
            self._report(p, record, line)
            return
        if write_lost_record(p, reason):
            self.check_records([p])
        if p.idx not in self.reported:  # a record exists after all, or none could be written: report
            self._report(p, {"status": Status.FAILED, "error": reason}, f"[FAILED] {p.label}: {reason}")


def watch(
    backend,
    active: list[Running],
    jobs: list[list[Point]],
    make_fn: Callable[[list[Point]], Any],
    launch: dict,
    results_dir: Path,
    total: int,
    poll_s: float,
) -> Monitor:
    """Follow the submitted jobs (`active`) to the end, submitting the queued `jobs` as the backend
    has room (local: a free slot; Ray: under max_running). Records are read while a job runs where
    the backend says so, else once it says the job ended (SLURM: no stat of 100,000 folders a poll)."""
    monitor = Monitor(total=total, backend=backend)
    queue, active = list(jobs), list(active)
    try:
        while queue or active:
            started = []
            while queue and backend.room() != 0:  # room None: the engine queues every job itself
                points = queue.pop(0)
                started += [Running(job, points) for job in backend.submit([make_fn(points)], nproc=points[0].nproc)]
            if started:
                active += started
                log_jobs(launch, started)
            for run in list(active):
                if backend.records_while_running:
                    monitor.check_records(run.points)
                if monitor.settle(run):
                    active.remove(run)
                    backend.release(run.job)
            if queue or active:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        print("\n" + backend.interrupt([run.job for run in active], results_dir), flush=True)
        raise SystemExit(130) from None  # no traceback: the message says it all
    return monitor


def save_launch(launch: dict, update: bool = True) -> None:
    """Write the launch entry to sweep.json in every results folder the grid writes to."""
    for results_dir in launch["results_dirs"]:
        log_launch(Path(results_dir), launch, update=update)


def log_jobs(launch: dict, runs: Sequence[Running]) -> None:
    """Record each job the moment it is submitted (appended to jobs.jsonl, sweeper.ledger)."""
    jobs = [{"job_id": str(r.job.job_id), "run_ids": [p.run_id for p in r.points]} for r in runs]
    launch["jobs"] += jobs
    for results_dir in launch["results_dirs"]:
        ledger.log_jobs(Path(results_dir), launch, jobs)
