"""Run a planned sweep as submitit jobs (a SLURM job array, or a local queue of worker processes),
watch it, and report each point as it finishes.

    python -m sweeper -m hydra/launcher=slurm  'dataset=glob(fortune_*)' method.r=4,8
    python -m sweeper -m hydra/launcher=local  hydra.launcher.workers=2 ...
    ... sweeper.detach=true      submit and return; `python -m sweeper.status <results_dir>`
    ... sweeper.chunk=10         10 grid points per job (one torch import per job)

How one grid point flows (the Hydra plugin in hydra_plugins/sweeper_launcher is a thin adapter):

  1. `launch()` composes each point's config, computes its run folder and decides (sweeper.sweep):
     skip (ok record; failed record unless sweeper.retry_failed), resume (checkpoint), run.
  2. The points to run are cut into jobs of `sweeper.chunk` points; each job is a `PointsJob`
     (a submitit Checkpointable) submitted as one task of a SLURM array, or started by the local
     queue on a free slot (its own GPU, or its share of the CPU threads).
  3. In the job, each point goes through Hydra's `run_job` -> the app's task function ->
     `sweeper.worker.run_point(cfg, should_stop=stop_requested)`, which writes record.json.
  4. SLURM's USR2 (time limit or preemption) makes `stop_requested()` true: the training loop
     checkpoints at the end of the step and raises `Interrupted`; the job then lets submitit requeue
     it, and the new attempt resumes from `<run_dir>/checkpoint`. SIGTERM (scontrol requeue,
     scancel) also checkpoints, then training goes on until SLURM kills the job.
  5. The launcher watches record files and job states (sweeper.monitor): it prints each point as it finishes (failures
     at once) and writes a `failed` record ("job <id> CANCELLED by 0") for a point whose job died
     without one, as soon as SLURM accounting (or the local process) says the job is gone.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from omegaconf import OmegaConf, open_dict

from .backends import LocalQueue, SlurmArrays
from .monitor import Running, log_jobs, save_launch, watch
from .sweep import Point, chunked, mark_started, new_launch, plan, plan_message, summarize

# ---------------------------------------------------------------- stop requests inside a job
_STOP = {"requeue": False, "term": False}


def stop_requested() -> bool:
    """True once the job was asked to stop (USR2: checkpoint and requeue; SIGTERM: checkpoint)."""
    return _STOP["requeue"] or _STOP["term"]


def _preempt_signal() -> int:
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def _install_stop_handlers() -> Callable[[], None]:
    """Turn USR2/SIGTERM into flags the training loop polls between steps; return `requeue()`, which
    runs submitit's own USR2 handler (checkpoint this job object, requeue it, exit) when we are ready."""
    submitit_handler = signal.getsignal(_preempt_signal())
    signal.signal(_preempt_signal(), lambda *_: _STOP.update(requeue=True))
    signal.signal(signal.SIGTERM, lambda *_: _STOP.update(term=True))

    def requeue() -> None:
        if callable(submitit_handler):
            submitit_handler(_preempt_signal(), None)  # exits (requeued) or raises (not requeued)
        raise SystemExit("stop requested and no submitit handler to requeue this job")

    return requeue


class PointsJob(submitit.helpers.Checkpointable):
    """One submitit job: a few grid points, run one after the other in this process.

    submitit's checkpoint() pickles this object as it is; that is enough, because the progress
    lives on disk (records of finished points are skipped, the current point resumes from its
    checkpoint)."""

    def __init__(self, hydra_context, task_function, config, points: Sequence[Point], singleton_state):
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.points, self.singleton_state = list(points), singleton_state

    def __call__(self) -> list[dict[str, Any]]:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import setup_globals

        Singleton.set_state(self.singleton_state)
        setup_globals()
        requeue = _install_stop_handlers()
        job_id = _job_id()
        os.environ["SWEEPER_JOB_ID"] = job_id or ""
        outcomes: list[dict[str, Any]] = []
        for group in self._groups():
            if _STOP["requeue"] and outcomes:
                requeue()  # between points: nothing to checkpoint
            if len(group) == 1:
                outcomes.append(self._run_point(group[0], job_id, requeue))
            else:
                outcomes.extend(self._run_pack(group, job_id, requeue))
        return outcomes

    def _groups(self) -> list[list[Point]]:
        """Points one by one; with sweeper.pack=K, packable LoRA points of this job in packs of <= K."""
        pack = int(self.config.get("sweeper", {}).get("pack") or 1)
        if pack <= 1 or len(self.points) == 1:
            return [[p] for p in self.points]
        from .pack import group_points

        cfgs = [self._task_config(p) for p in self.points]
        return [[self.points[i] for i in idx] for idx in group_points(cfgs, size=pack)]

    def _task_config(self, point: Point):
        from hydra.core.hydra_config import HydraConfig

        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(point.overrides))
        with open_dict(config):
            config.hydra.job.num = point.idx
        HydraConfig.instance().set_config(config)
        return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])

    def _run_pack(self, points: list[Point], job_id: str | None, requeue) -> list[dict[str, Any]]:
        """K points on one shared base, one forward per step (sweeper.pack; docs/packing.md)."""
        from .pack import run_packed
        from .train import Interrupted

        cfgs = [self._task_config(p) for p in points]
        for p in points:
            if p.run_dir is not None:
                mark_started(p.run_dir, job_id)
        while True:
            try:
                records = run_packed(cfgs, should_stop=stop_requested)
                break
            except Interrupted:  # checkpoints written; the next attempt resumes every member
                if _STOP["requeue"]:
                    requeue()
                _STOP["term"] = False
        return [{"idx": p.idx, "run_id": p.run_id, "status": r["status"]} for p, r in zip(points, records)]

    def _run_point(self, point: Point, job_id: str | None, requeue) -> dict[str, Any]:
        from hydra.core.utils import JobStatus, run_job

        from .train import Interrupted

        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(point.overrides))
        with open_dict(config):
            config.hydra.job.id = job_id or f"job{point.idx}"
            config.hydra.job.num = point.idx
        if point.run_dir is not None:
            mark_started(point.run_dir, job_id)
        while True:
            ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            if ret.status == JobStatus.FAILED and isinstance(ret._return_value, Interrupted):
                if _STOP["requeue"]:
                    requeue()
                _STOP["term"] = False  # SIGTERM: the checkpoint is written; go on (resumes from it)
                continue
            break
        if ret.status == JobStatus.COMPLETED:
            return {"idx": point.idx, "run_id": point.run_id, "status": str(ret._return_value)}
        return {"idx": point.idx, "run_id": point.run_id, "status": "failed",
                "error": f"{type(ret._return_value).__name__}: {ret._return_value}"}


def _job_id() -> str | None:
    try:
        return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # not inside a submitit job
        return None


# ---------------------------------------------------------------- the entry point (called by the plugin)
def launch(kind: str, params: Any, hydra_context, task_function, config, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list:
    """Plan, submit and (unless sweeper.detach) watch one batch of Hydra jobs; one JobReturn per job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobReturn, JobStatus, setup_globals

    setup_globals()
    sweep_cfg = config.get("sweeper", OmegaConf.create({}))
    retry_failed, detach, chunk = bool(sweep_cfg.get("retry_failed")), bool(sweep_cfg.get("detach")), int(sweep_cfg.get("chunk") or 1)
    chunk = max(chunk, int(sweep_cfg.get("pack") or 1))  # a pack trains inside one job: K points per job at least
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    items = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.num = idx
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        items.append((idx, list(overrides), task_cfg))
    points = plan(items, retry_failed)
    plan_time = time.time()
    for p in points:
        p.since = plan_time
    to_run = [p for p in points if p.runs]
    results_dirs = sorted({p.results_dir for p in points if p.results_dir is not None}) or [Path(str(sweep_cfg.get("results_dir", "results")))]
    results_dir = results_dirs[0]
    launch_entry = new_launch(points, kind, sweep_cfg, str(sweep_dir))
    launch_entry["results_dirs"] = [str(d) for d in results_dirs]
    print(f"sweep {results_dir}: {plan_message(summarize(points))}", flush=True)

    finals: dict[int, str] = {p.idx: ("skipped" if not p.runs else "submitted") for p in points}
    if to_run:
        backend = (SlurmArrays if kind == "slurm" else LocalQueue)(sweep_dir / ".submitit" / "%j", params)
        print(backend.describe() + f"; {len(to_run)} point(s) in jobs of {chunk}", flush=True)
        state = Singleton.get_state()
        make_fn = lambda pts: PointsJob(hydra_context, task_function, config, pts, state)  # noqa: E731
        jobs = chunked(to_run, chunk)
        save_launch(launch_entry, update=False)
        if detach and kind == "slurm":
            submitted = backend.submit_all([make_fn(pts) for pts in jobs])
            log_jobs(launch_entry, results_dir, [Running(j, pts) for j, pts in zip(submitted, jobs)])
            ids = sorted({str(j.job_id).split("_")[0] for j in submitted})
            print(f"detached: SLURM job(s) {' '.join(ids)}; follow with: python -m sweeper.status {results_dir}", flush=True)
        elif detach:
            _detach_local(backend, jobs, make_fn, launch_entry, results_dir, len(to_run), params, sweep_dir)
        else:
            t0 = time.time()
            launch_entry["monitor"] = {"pid": os.getpid(), "host": socket.gethostname(), "log": None}
            monitor = watch(backend, jobs, make_fn, launch_entry, results_dir, len(to_run), float(params.get("poll_s", 2.0)))
            failed = {q.idx for q, _ in monitor.failed}
            for p in to_run:
                finals[p.idx] = "failed" if p.idx in failed else "ok"
            print(f"sweep done in {time.time() - t0:.0f}s: {monitor.ok} ok, {len(monitor.failed)} failed"
                  + (" (sweeper.retry_failed=true re-runs them)" if monitor.failed else "")
                  + f"; python -m sweeper.collect {results_dir}", flush=True)
    else:
        save_launch(launch_entry, update=False)

    returns = []
    for p in points:
        ret = JobReturn(overrides=list(p.overrides), status=JobStatus.COMPLETED)
        ret.return_value = finals[p.idx]
        returns.append(ret)
    return returns


def _detach_local(backend, jobs, make_fn, launch_entry, results_dir: Path, total: int, params, sweep_dir: Path) -> None:
    """Fork a monitor that runs the local queue to the end, in its own session, logging to a file."""
    log_path = sweep_dir / "monitor.log"
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        os.read(ready_r, 1)  # the child has recorded itself in sweep.json (or died: EOF)
        os.close(ready_r)
        print(f"detached: local queue running in process {pid} (log {log_path}); "
              f"follow with: python -m sweeper.status {results_dir}", flush=True)
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
        launch_entry["monitor"] = {"pid": os.getpid(), "host": socket.gethostname(), "log": str(log_path)}
        save_launch(launch_entry)
        os.write(ready_w, b"1")
        os.close(ready_w)
        monitor = watch(backend, jobs, make_fn, launch_entry, results_dir, total, float(params.get("poll_s", 2.0)))
        print(f"sweep done: {monitor.ok} ok, {len(monitor.failed)} failed", flush=True)
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
