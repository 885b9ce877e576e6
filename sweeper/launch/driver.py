"""Run a planned sweep as jobs on a backend (a local queue of worker processes, SLURM job arrays,
Ray tasks: sweeper.launch.backends), watch it, and report each point as it finishes.

    python -m sweeper -m hydra/launcher=slurm  'dataset=glob(fortune_*)' method.r=4,8
    python -m sweeper -m hydra/launcher=local  hydra.launcher.workers=2 ...
    python -m sweeper -m hydra/launcher=ray    hydra.launcher.address=auto ...
    ... sweeper.detach=true      submit and return; `python -m sweeper.status <results_dir>`
    ... sweeper.chunk=10         10 grid points per job (one torch import per job)

How one grid point flows (the Hydra plugin in hydra_plugins/sweeper_launcher is a thin adapter):

  1. `launch()` composes each point's config, computes its run folder and decides (planner, sweeper.runs):
     skip (ok record; failed record unless sweeper.retry_failed), resume (checkpoint), run.
  2. The points to run are cut into jobs of `sweeper.chunk` points; each job is a `PointsJob`
     (a submitit Checkpointable) submitted as one task of a SLURM array, started by the local
     queue on a free slot (its own GPU, or its share of the CPU threads), or sent as a Ray task.
  3. In the job (job.py), each point goes through Hydra's `run_job` -> `sweeper.train.point.point_task`
     -> `run_point(cfg, ctx)` (ctx: the job's PointContext), which writes record.json.
  4. SLURM's USR2 (time limit or preemption) checkpoints and requeues; the next attempt resumes (job.py).
  5. The launcher watches record files and job states (monitor.py): it prints each point as it finishes (failures
     at once) and writes a `failed` record ("job <id> CANCELLED by 0") for a point whose job died
     without one, as soon as the backend (SLURM accounting, the local process, Ray) says the job is gone.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .. import shell
from ..ledger import now_iso
from ..records import Status
from ..runs import Decision
from .backends import Backend, SubmitError, backend_class
from .fits import Fits
from .grid import GridComposer
from .job import JobContext, PointsJob
from .monitor import Running, log_jobs, save_launch, watch
from .options import OptionError, check_options, check_ranks, one_line_os_errors
from .planner import Point, chunked, iter_plan, median_point_seconds, not_applicable_message, plan_message, summarize


@one_line_os_errors  # a results folder that cannot be written (read-only, full): one line, exit 2
def launch(
    kind: str,
    params: Any,
    hydra_context,
    task_function,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list:
    """Plan, submit and (unless sweeper.detach) watch one batch of Hydra jobs; one JobReturn per job."""
    from hydra.core.utils import JobReturn, JobStatus, setup_globals

    setup_globals()
    sweep_cfg = config.sweeper
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    try:
        engine = backend_class(kind)
        check_options(engine, params, sweep_cfg)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # the engine is reached before planning: no cluster at the address stops the launch at once
        backend = None if sweep_cfg.dry_run else engine(sweep_dir / ".submitit" / "%j", params)
    except OptionError as error:
        _stop(error)
    fits = Fits(*engine.memory_limit(params), table=bool(sweep_cfg.dry_run))
    chunk = job_size(engine, params, sweep_cfg, len(job_overrides))
    entry = new_launch(kind, sweep_cfg, str(sweep_dir), chunk)
    context = None if backend is None else JobContext.save(sweep_dir, hydra_context, task_function, config)

    def make_job(pts: list[Point]) -> PointsJob:
        return PointsJob(context, pts)

    stream = None
    if backend is not None and backend.streams:  # its jobs go out while planning: sized for the grid
        backend.prepare(nproc=1, jobs=-(-len(job_overrides) // chunk))
        stream = Stream(backend, make_job, chunk, entry)
    try:
        points = plan_points(hydra_context, config, job_overrides, initial_job_idx, stream, fits)
        to_run = [p for p in points if p.runs]
        if backend is not None and not backend.streams:
            backend.prepare(nproc=max([p.nproc for p in to_run], default=1), jobs=len(chunked(to_run, chunk)))
    except OptionError as error:
        _stop(error)
    entry.update(launch_points(points))
    entry["results_dirs"] = sorted({*entry["results_dirs"], *(str(p.results_dir) for p in points if p.results_dir)})
    entry["results_dirs"] = entry["results_dirs"] or [str(Path(str(sweep_cfg.results_dir)).absolute())]
    results_dir = Path(entry["results_dirs"][0])
    not_applicable = not_applicable_message(points)
    if not_applicable:
        print(not_applicable, flush=True)
    print(f"sweep {results_dir}: {plan_message(summarize(points))}", flush=True)

    finals: dict[int, str] = {p.idx: ("skipped" if not p.runs else "submitted") for p in points}
    if backend is None:
        print(fits.table(), flush=True)
        print(dry_run_message(engine, params, to_run, chunk), flush=True)
        finals.update({p.idx: "planned" for p in to_run})
    elif stream is not None:
        stream.finish()
        finals.update({p.idx: "not submitted" for p in stream.unsubmitted})
        if sweep_cfg.detach:
            backend.detach([], make_job, entry, results_dir, len(to_run), sweep_dir)
        elif stream.runs:
            finals.update(_watch(backend, stream.runs, [], make_job, entry, results_dir, params))
    else:
        save_launch(entry, update=False)
        jobs = chunked(to_run, chunk)
        if jobs:
            print(backend.describe() + f"; {len(to_run)} point(s) in jobs of {chunk}", flush=True)
        if jobs and sweep_cfg.detach:
            backend.detach(jobs, make_job, entry, results_dir, len(to_run), sweep_dir)
        elif jobs:
            finals.update(_watch(backend, [], jobs, make_job, entry, results_dir, params))
    if stream is not None and stream.unsubmitted:
        print(
            f"{len(stream.unsubmitted)} point(s) not submitted ({backend.submitter} refused: {stream.error}); "
            "run the same command again to submit them",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1)

    returns = []
    for p in points:
        ret = JobReturn(overrides=list(p.overrides), status=JobStatus.COMPLETED)
        ret.return_value = finals[p.idx]
        returns.append(ret)
    return returns


def _stop(error: Exception):
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def _watch(backend, active, queue, make_job, entry, results_dir: Path, params) -> dict[int, str]:
    """Follow the jobs to the end (submitting the local queue's as slots free); each point's final word."""
    t0 = time.time()
    entry["monitor"] = {"pid": os.getpid(), "host": socket.gethostname(), "log": None}
    points = [p for run in active for p in run.points] + [p for job in queue for p in job]
    monitor = watch(backend, active, queue, make_job, entry, results_dir, len(points), float(params.poll_s))
    failed = {q.idx for q, _ in monitor.failed}
    print(
        f"sweep done in {time.time() - t0:.0f}s: {monitor.ok} ok, {len(monitor.failed)} failed"
        + (" (sweeper.retry_failed=true re-runs them)" if monitor.failed else "")
        + f"; python -m sweeper.collect {results_dir}",
        flush=True,
    )
    return {p.idx: str(Status.FAILED if p.idx in failed else Status.OK) for p in points}


FLUSH_S = 10.0  # the first array is submitted partly filled once planning has run this long


class Stream:
    """A backend that streams (SLURM): submit each array the moment the planner has filled it, and
    record it in jobs.jsonl as soon as the engine accepts it. After a refusal nothing more is
    submitted (a submit limit would refuse the rest too); what was submitted is still watched, the
    rest waits for a relaunch."""

    def __init__(self, backend: Backend, make_job, chunk: int, entry: dict):
        self.backend, self.make_job, self.chunk, self.entry = backend, make_job, chunk, entry
        self.buffer: list[Point] = []
        self.runs: list[Running] = []
        self.unsubmitted: list[Point] = []
        self.error: str | None = None
        self._logged = False
        self._started = time.monotonic()

    def add(self, point: Point) -> None:
        if point.results_dir is not None and str(point.results_dir) not in self.entry["results_dirs"]:
            self.entry["results_dirs"].append(str(point.results_dir))
        if point.runs:
            if self.buffer and self.buffer[0].nproc != point.nproc:
                self._submit()  # an array's tasks all start train.nproc ranks: one array per nproc
            self.buffer.append(point)
            full = len(self.buffer) >= self.chunk * self.backend.array_size
            early = not self.runs and time.monotonic() - self._started > FLUSH_S  # slow planning: start
            if full or early:
                self._submit()

    def finish(self) -> None:
        """Submit the last array; then the launch entry gets every point's decision (sweep.json)."""
        self._submit()
        self.backend.finish()
        for p in self.unsubmitted:
            if p.run_id in self.entry["points"]:
                self.entry["points"][p.run_id]["decision"] = "not submitted"
        save_launch(self.entry, update=self._logged)
        if self.runs:
            print(
                f"{self.backend.describe()}; {sum(len(r.points) for r in self.runs)} point(s) in "
                f"{len(self.runs)} job(s) of {self.chunk}, {len(self.backend.array_ids)} array(s)",
                flush=True,
            )

    def abandon(self, planned: list[Point]) -> None:
        """Planning failed (an error, Ctrl-C) after arrays went out: record what was planned, say what runs."""
        if not self.runs:
            return
        self.entry.update(launch_points(planned))
        save_launch(self.entry, update=True)
        ids = " ".join(self.backend.array_ids)
        print(
            f"planning stopped after {len(planned)} point(s); SLURM array(s) {ids} keep running "
            f"(scancel {ids} stops them); the same command finishes the grid",
            file=sys.stderr,
            flush=True,
        )

    def _submit(self) -> None:
        points, self.buffer = self.buffer, []
        if not points or self.error is not None:
            self.unsubmitted += points
            return
        if not self._logged:  # the launch is on record before its first array
            save_launch(self.entry, update=False)
            self._logged = True
        jobs = chunked(points, self.chunk)
        try:
            submitted = self.backend.submit([self.make_job(pts) for pts in jobs], nproc=points[0].nproc)
        except SubmitError as error:
            self.error = str(error)
            self.unsubmitted += points
            n = len(self.backend.array_ids)
            refused = f"{self.backend.submitter} refused array {n + 1}"
            print(f"error: {refused} ({len(points)} point(s)): {error}", file=sys.stderr, flush=True)
            return
        runs = [Running(job, pts) for job, pts in zip(submitted, jobs)]
        log_jobs(self.entry, runs)
        self.runs += runs


def job_size(engine: type[Backend], params: Any, sweep_cfg: Any, grid_points: int) -> int:
    """Points per job: sweeper.chunk, or the backend's rule for chunk=auto; a pack trains inside one
    job, so sweeper.pack points per job at least."""
    chunk = sweep_cfg.chunk
    if chunk == "auto":
        seconds = median_point_seconds(Path(str(sweep_cfg.results_dir)).absolute())
        chunk = engine.auto_chunk(params, grid_points, seconds)
    return max(int(chunk or 1), int(sweep_cfg.pack or 1))


def plan_points(
    hydra_context,
    config: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    first_idx: int,
    stream: Stream | None = None,
    fits: Fits | None = None,
) -> list:
    """Every point of the batch composed (sweeper.launch.grid) and decided (planner), with a progress
    bar; each point goes to `stream` as soon as it is decided, after `fits` found its memory estimate
    within its limit."""
    t0 = time.perf_counter()
    composer = GridComposer(hydra_context.config_loader, config)
    items = (
        (idx, list(overrides), composer.compose(list(overrides)))
        for idx, overrides in enumerate(job_overrides, start=first_idx)
    )
    points = []
    try:
        for point in iter_plan(progress(items, len(job_overrides), "planning"), bool(config.sweeper.retry_failed)):
            check_ranks(point, config)
            if fits is not None:
                fits.check(point)
            points.append(point)
            if stream is not None:
                stream.add(point)
    except BaseException:
        if stream is not None:
            stream.abandon(points)
        raise
    seconds = time.perf_counter() - t0
    print(
        f"planned {len(points)} point(s) in {seconds:.1f}s ({1e3 * seconds / max(1, len(points)):.2f} ms a point; "
        f"{composer.compositions} Hydra composition(s), {composer.fallbacks} point(s) composed whole)",
        flush=True,
    )
    return points


def dry_run_message(engine: type[Backend], params: Any, to_run: Sequence[Point], chunk: int) -> str:
    """sweeper.dry_run=true: what the launch would submit."""
    jobs = len(chunked(to_run, chunk))
    where = engine.dry_run_where(params, jobs)
    return f"dry run: would submit {len(to_run)} point(s) as {jobs} job(s) of {chunk} {where}; nothing submitted"


def progress(items, total: int, desc: str):
    """A progress bar on stderr for grids big enough to wait for (planning 10,000 points takes a while)."""
    from tqdm import tqdm

    return tqdm(items, total=total, desc=desc, unit="pt", file=sys.stderr, disable=total < 500, mininterval=1.0)


# ---------------------------------------------------------------- the launch entry of sweep.json
def command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("sweeper", "__main__.py")):
        argv[0:1] = ["python", "-m", "sweeper"]
    return shlex.join(argv)


def git_state(cwd: Path | str | None = None) -> dict[str, Any]:
    cwd = str(cwd or Path(__file__).resolve().parents[2])

    def git(*args: str) -> str | None:
        out = shell.output(["git", "-C", cwd, *args], timeout=10)
        return out.strip() if out is not None else None

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": bool(dirty) if dirty is not None else None}


def new_launch(launcher: str, sweep_cfg: Any, hydra_sweep_dir: str, chunk: int) -> dict[str, Any]:
    """The launch entry: who launched what, from which commit; launch_points() adds the decisions."""
    return {
        "started_at": now_iso(),
        "command": command_line(),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        **git_state(),
        "launcher": launcher,
        "hydra_sweep_dir": str(Path(hydra_sweep_dir).absolute()),
        "chunk": chunk,
        "detach": bool(sweep_cfg.detach),
        "retry_failed": bool(sweep_cfg.retry_failed),
        "counts": {},
        "points": {},
        "results_dirs": [],
        "jobs": [],  # [{"job_id": ..., "run_ids": [...]}], filled as jobs are submitted
        "monitor": None,  # who follows a launch: {"pid", "host", "log"} of a process, or the backend's own
    }


def launch_points(points: Sequence[Point]) -> dict[str, Any]:
    """The decisions: counts, and one entry per run folder (a duplicate is its first point's folder;
    a not-applicable point has none: it is listed apart, for status to count apart)."""
    apart = (Decision.DUPLICATE, Decision.NOT_APPLICABLE)
    return {
        "counts": summarize(points),
        "points": {
            p.run_id: {"overrides": p.label, "decision": str(p.decision)}
            for p in points
            if p.run_id and p.decision not in apart
        },
        "not_applicable": {p.run_id: p.label for p in points if p.decision == Decision.NOT_APPLICABLE},
    }
