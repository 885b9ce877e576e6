"""`hydra/launcher=slurm`: SLURM job arrays (cut at the cluster's MaxArraySize), each submitted as
soon as the planner has filled it (submitit's SlurmExecutor); the monitor asks squeue / sacct."""

from __future__ import annotations

import contextlib
import getpass
import io
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit

from ... import shell
from ...ledger import array_id
from ...slurm import SLURM_ALIVE, slurm_states
from ..options import OptionError
from .base import MIN_JOB_S, Backend, JobResult, SubmitError, register, submitit_result


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


def _user() -> str:
    return os.environ.get("USER") or getpass.getuser()


def submit_limit() -> int | None:
    """The user's MaxSubmitJobs on their associations, or None when none is set (a QOS limit is not
    read: sbatch refusing an array is handled, see Stream)."""
    out = shell.output(["sacctmgr", "-n", "-P", "show", "assoc", f"user={_user()}", "format=MaxSubmit"], timeout=20)
    limits = [int(x) for x in (out or "").split() if x.isdigit()]
    return min(limits) if limits else None


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


SBATCH_TEXT = ("name", "comment", "partition", "qos", "account", "constraint", "exclude", "nodelist", "gres")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@register
class SlurmArrays(Backend):
    """SLURM job arrays, each submitted as soon as the planner has filled it (MaxArraySize tasks).

    `array_parallelism` caps the whole sweep: the arrays run in lanes, each lane a chain of arrays
    (`--dependency=afterany` on the lane's previous one) with its share of the cap as `%N`.
    The monitor's questions go to the scheduler on a timer of its own: `squeue` lists the live
    tasks (one call for the whole sweep), and sacct is asked per array only about tasks that left it."""

    name = "slurm"
    POSITIVE = {
        "timeout_min": False,
        "cpus_per_task": False,
        "array_parallelism": False,
        "max_array_size": True,
        "poll_s": False,
        "mem_gb": True,
        "gpus_per_task": True,
        "gpus_per_node": True,
    }
    streams = True  # each array goes out the moment the planner has filled it
    submitter = "sbatch"
    records_while_running = False  # the monitor reads a job's records once it ended: no 100,000 stats a poll

    @classmethod
    def check_options(cls, params: Any) -> None:
        """Positive numbers, and no control character in a text that becomes an #SBATCH line (a newline
        in a job name or comment would end the line early and inject the rest as a shell line)."""
        super().check_options(params)
        texts = {k: params.get(k) for k in SBATCH_TEXT}
        texts.update({f"additional_parameters.{k}": v for k, v in (params.get("additional_parameters") or {}).items()})
        for key, value in texts.items():
            if value is not None and _CONTROL.search(str(value)):
                raise OptionError(
                    f"hydra.launcher.{key} holds a control character (it would break its #SBATCH line): {value!r}"
                )

    @classmethod
    def auto_chunk(cls, params: Any, points: int, point_seconds: float | None) -> int:
        """sweeper.chunk=auto: the fewest points per job such that the grid fits one array
        (MaxArraySize) and the user's submit limit (MaxSubmitJobs); when earlier records of the folder
        tell how long a point takes, also at least MIN_JOB_S of work per job and at most half its time
        limit (the time limit wins: the grid then takes several arrays)."""
        array_size = max_array_size(params.max_array_size)
        limit = min(array_size, submit_limit() or array_size)
        chunk = max(1, math.ceil(points / limit))
        if point_seconds:
            longest = max(1, int(0.5 * 60 * float(params.timeout_min) / point_seconds))
            chunk = min(max(chunk, math.ceil(MIN_JOB_S / point_seconds)), longest)
        return chunk

    @classmethod
    def memory_limit(cls, params):
        return (float(params.mem_gb) if params.mem_gb else None), "hydra.launcher.mem_gb"

    @classmethod
    def dry_run_where(cls, params: Any, jobs: int) -> str:
        size = max_array_size(params.max_array_size)
        return f"in {-(-jobs // size)} SLURM array(s) of at most {size} task(s)" if jobs else "(no array)"

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
        self.parallelism = int(params.array_parallelism) if params.array_parallelism else None
        self.lanes: list[list[str]] = [[]]  # each lane's arrays, in order
        self.shares = [self.parallelism or self.array_size]
        self.array_ids: list[str] = []
        self.scheduler_s = min(30.0, max(float(params.poll_s), 10 * float(params.poll_s)))  # see ended()
        self._submitted_at = 0.0
        self._queue: set[str] | None = None
        self._queue_at = self._answered_at = 0.0
        self._queue_failures = 0
        self._sacct: dict[str, str] = {}
        self._sacct_at = 0.0
        self._unlisted_since: dict[str, float] = {}

    def describe(self) -> str:
        p = self.executor.parameters
        cap = f", at most {self.parallelism} running" if self.parallelism else ""
        return (
            f"slurm: partition {p.get('partition', '(default)')}, {p.get('time')} min, "
            f"{p.get('cpus_per_task', 1)} cpu(s)/task, at most {self.array_size} tasks per array{cap}"
        )

    def prepare(self, nproc: int, jobs: int) -> None:
        """Size the lanes for about `jobs` jobs, counted before skips (finish() shares the cap out
        again over the lanes in use), plus the early first array the launcher may send."""
        arrays = max(1, -(-jobs // self.array_size)) + 1
        if self.parallelism:
            n = min(self.parallelism, arrays)
            self.lanes = [[] for _ in range(n)]
            self.shares = _split(self.parallelism, n)

    def submit(self, fns: Sequence[Callable[[], Any]], nproc: int = 1) -> list:
        """Submit one array (len(fns) <= array_size) in the next lane; SubmitError if sbatch refuses.
        Points of train.nproc=N run as N tasks (hydra.launcher.nodes x N/nodes per node; srun starts them)."""
        k = len(self.array_ids) % len(self.lanes)
        lane = self.lanes[k]
        after = f"afterany:{lane[-1]}" if lane and self.parallelism else None
        nodes = int(self.params.get("nodes") or 1)
        self.executor.update_parameters(
            array_parallelism=self.shares[k], dependency=after, nodes=nodes, ntasks_per_node=max(1, nproc // nodes)
        )
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit echoes sbatch's stderr: said once, below
                jobs = self.executor.submit_array(list(fns))
        except Exception as error:  # noqa: BLE001  submitit's FailedJobError carries sbatch's stderr
            raise SubmitError(_sbatch_reason(error)) from None
        if jobs:
            lane.append(array_id(jobs[0].job_id))
            self.array_ids.append(lane[-1])
        self._submitted_at = time.time()
        return jobs

    def finish(self) -> None:
        """After the last array: share the cap over the lanes in use (skipped points, or a grid
        smaller than planned for, leave lanes empty) with `scontrol update ArrayTaskThrottle`."""
        used = [lane for lane in self.lanes if lane]
        if not self.parallelism or not used or len(used) == len(self.lanes):
            return
        self.lanes, self.shares = used, _split(self.parallelism, len(used))
        for lane, share in zip(self.lanes, self.shares):
            for array in lane:  # an array that already ended refuses the update: nothing to change
                shell.output(["scontrol", "update", f"JobId={array}", f"ArrayTaskThrottle={share}"], timeout=30)

    def ended(self, job) -> bool:
        """True once the task left the scheduler's queue: one `squeue` for the whole sweep every
        scheduler_s (a requeued task is pending again, so still listed), then, for a task no longer
        listed, its result file or sacct's final state (squeue hides jobs of some partitions and
        lags by nothing, sacct can lag a few seconds). Never from a stale answer: until squeue has
        answered after this task's array was submitted, nothing has ended."""
        job_id, now = str(job.job_id), time.time()
        if now - self._queue_at >= self.scheduler_s:
            self._poll_queue(now)
        if self._queue is None or self._answered_at <= self._submitted_at:
            if self._queue_failures < QUEUE_FAILURES:
                return False
            return job.paths.result_pickle.exists() or self._final_state(job_id) not in (None, *SLURM_ALIVE)
        if job_id in self._queue or array_id(job_id) in self._queue:
            return False
        if job.paths.result_pickle.exists():
            return True
        if self._final_state(job_id) in SLURM_ALIVE:  # listed alive by sacct: a hidden partition, or lag
            return now - self._unlisted_since.setdefault(job_id, now) > 300  # a stale sacct entry: enough
        return True

    def _poll_queue(self, now: float) -> None:
        self._queue_at = now  # an attempt, answered or not: a failing squeue is not retried every call
        out = shell.output(["squeue", "--all", "-u", _user(), "-h", "-r", "-o", "%i"], timeout=120)
        if out is not None:
            self._queue, self._answered_at, self._queue_failures = set(out.split()), now, 0
            return
        self._queue_failures += 1
        if self._queue_failures == QUEUE_FAILURES:
            print(
                f"warning: squeue failed {QUEUE_FAILURES} times in a row: following the jobs through sacct", flush=True
            )

    def result(self, job) -> JobResult | None:
        return submitit_result(job)

    def interrupt(self, jobs: Sequence, results_dir: Path) -> str:
        ids = sorted({array_id(job.job_id) for job in jobs})
        return (
            f"interrupted: the SLURM jobs keep running (scancel {' '.join(ids)} stops them); "
            f"python -m sweeper.status {results_dir}"
        )

    def detach(self, queue: list, make_job: Callable, entry: dict, results_dir: Path, total: int, sweep_dir: Path):
        """Every array is submitted already: SLURM runs them; sweeper.status follows them."""
        ids = " ".join(self.array_ids) or "(none)"
        print(f"detached: SLURM job(s) {ids}; follow with: python -m sweeper.status {results_dir}", flush=True)

    @classmethod
    def job_states(cls, launches: Sequence[dict], job_ids: Sequence[str]) -> dict[str, str]:
        return slurm_states(list(job_ids))

    @classmethod
    def unfinished_state(cls, job_id: str, started_by: str | None, launch: dict, states: dict) -> tuple[str, str]:
        """sacct's word: alive (running if this task started the point) or ended without a record (lost)."""
        state = states.get(job_id) or states.get(array_id(job_id))
        if state is None:  # sacct unavailable (or too new for it): trust the marker
            return ("running" if started_by is not None else "pending"), ""
        if state in SLURM_ALIVE:
            return ("running" if state == "RUNNING" and started_by == job_id else "pending"), ""
        return "lost", f"job {job_id} {state}"

    def lost_reason(self, job) -> str:
        state = self._final_state(str(job.job_id))
        if state and state not in SLURM_ALIVE and state != "UNKNOWN":
            return f"job {job.job_id} {state}"
        return unaccounted_reason(str(job.job_id))

    def _final_state(self, job_id: str) -> str | None:
        """The task's state in sacct, asked about every array of the sweep at once (at most every
        scheduler_s): when a whole array is cancelled, one call names the end of all its tasks."""
        if self._sacct.get(job_id) in (None, *SLURM_ALIVE) and time.time() - self._sacct_at > self.scheduler_s:
            self._sacct, self._sacct_at = slurm_states([*self.array_ids, job_id]), time.time()
        return self._sacct.get(job_id)


QUEUE_FAILURES = 3  # squeue failing this often in a row: sacct alone decides what ended


def _split(total: int, parts: int) -> list[int]:
    """`total` shared out as evenly as possible over `parts` (the first ones get the remainder)."""
    return [total // parts + (k < total % parts) for k in range(parts)]


def unaccounted_reason(job_id: str) -> str:
    """Why a task left the queue that sacct names no end for."""
    out = shell.output(["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID"], timeout=60)
    if out is not None and not out.strip():
        # Accounting works but never saw this task: it left the pending array without starting,
        # which only scancel does (SLURM keeps no record of a pending array task cancelled alone).
        return f"job {job_id} CANCELLED before it started (removed from the pending array)"
    return f"job {job_id} left the queue without a result (state unknown: is SLURM accounting on?)"


def _sbatch_reason(error: Exception) -> str:
    """The line of sbatch's output that says why (`sbatch: error: ...`), else the last one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower() and "sbatch" in line.lower()]
    return (said or lines or [type(error).__name__])[-1][:300]
