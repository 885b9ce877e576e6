"""What a backend (an engine that runs a sweep's jobs) must do, and the registry of backends by name.

The driver, the monitor, the option checks and `sweeper.status` ask the backend of a launch
(`hydra.launcher.kind`) through this interface; none of them branches on its name. A job is whatever
`submit` returns: it has a `job_id`; the backend alone knows how to tell it ended and what it returned.

Adding an engine: one module here with a `@register`ed subclass of `Backend`, one import line in
`backends/__init__.py`, and `conf/hydra/launcher/<name>.yaml` (`kind: <name>` + its options).
"""

from __future__ import annotations

import math
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..options import OptionError, check_positive

BACKENDS: dict[str, type[Backend]] = {}


class BackendError(OptionError):
    """The engine cannot take the sweep (no cluster at the address, a request no node can meet): one line."""


class SubmitError(RuntimeError):
    """The engine refused a submission (sbatch: a QOS submit limit, a bad option): one line, in its own words."""


@dataclass
class JobResult:
    """What an ended job returned: its points' outcomes, or the one-line error it raised."""

    outcomes: list[dict[str, Any]] | None = None
    error: str | None = None


class Backend(ABC):
    """An engine for a sweep's jobs. Class-level answers (options, chunking, status) need no engine;
    an instance is one launch's connection to it."""

    name: ClassVar[str]
    POSITIVE: ClassVar[dict[str, bool]] = {}  # launcher key -> may it be null? (checked > 0)
    streams: ClassVar[bool] = False  # submits while planning (SLURM arrays), else the monitor submits
    records_while_running: ClassVar[bool] = True  # the monitor reads records of jobs still running
    result_grace_s: ClassVar[float] = 10.0  # an ended job without a result gets this long for it to show
    submitter: ClassVar[str] = "the engine"  # who refuses a submission, in messages (SLURM: sbatch)
    array_ids: list[str]  # a streaming backend's batches submitted so far (SLURM: array ids), for messages

    # ---------------------------------------------------------------- before anything is submitted
    @classmethod
    def check_options(cls, params: Any) -> None:
        """OptionError naming the first bad launcher setting."""
        check_positive(params, cls.POSITIVE)

    @classmethod
    def auto_chunk(cls, params: Any, points: int, point_seconds: float | None) -> int:
        """sweeper.chunk=auto: one point per job, unless points are short enough for a torch import
        (a few seconds per job) to dominate: then about a minute of work per job."""
        return max(1, math.ceil(MIN_JOB_S / 10 / point_seconds)) if point_seconds else 1

    @classmethod
    def memory_limit(cls, params: Any) -> tuple[float | None, str]:
        """(GB, the setting it comes from): the memory one point's job gets, which the planner checks
        each point's estimate against when train.max_memory_gb is not set; None: not known here."""
        return None, "train.max_memory_gb"

    @classmethod
    def dry_run_where(cls, params: Any, jobs: int) -> str:
        """How `jobs` jobs would go out (the end of the dry run's line)."""
        return f"on {cls.name}"

    @abstractmethod
    def __init__(self, folder: Path, params: Any):
        """Connect to the engine; BackendError if it cannot take the sweep."""

    def prepare(self, nproc: int, jobs: int) -> None:  # noqa: B027  optional hook
        """Before the first submit: the largest train.nproc of the points to run, about how many jobs."""

    @abstractmethod
    def describe(self) -> str:
        """One line: where the jobs run."""

    # ---------------------------------------------------------------- submitting
    def room(self) -> int | None:
        """How many more jobs the engine takes now (None: any number; it queues them itself)."""
        return None

    @abstractmethod
    def submit(self, fns: Sequence[Callable[[], Any]], nproc: int = 1) -> list:
        """Submit one job per callable (each runs its points' train.nproc ranks); the jobs."""

    def finish(self) -> None:  # noqa: B027  optional hook
        """After the last submit of a launch."""

    def release(self, job) -> None:  # noqa: B027  optional hook
        """The monitor is done with `job` (its points are reported): its room is free again."""

    # ---------------------------------------------------------------- following
    @abstractmethod
    def ended(self, job) -> bool:
        """Has the job left the engine (finished, failed, killed)?"""

    @abstractmethod
    def result(self, job) -> JobResult | None:
        """What an ended job returned, or None when it returned nothing (yet)."""

    @abstractmethod
    def lost_reason(self, job) -> str:
        """One line: why an ended job left no result (its record says it)."""

    @abstractmethod
    def interrupt(self, jobs: Sequence, results_dir: Path) -> str:
        """Ctrl-C while watching: stop what should stop; the line that says what happened."""

    @abstractmethod
    def detach(self, queue: list, make_job: Callable, entry: dict, results_dir: Path, total: int, sweep_dir: Path):
        """sweeper.detach: leave the jobs (submitted, or `queue`d for the monitor) to run without this
        process, record who follows them in `entry["monitor"]`, and print how to follow them."""

    # ---------------------------------------------------------------- sweeper.status (no engine instance)
    @classmethod
    def job_states(cls, launches: Sequence[dict], job_ids: Sequence[str]) -> dict[str, str]:
        """{job id: the engine's word for its state}, asked once for the whole sweep."""
        return {}

    @classmethod
    def unfinished_state(cls, job_id: str, started_by: str | None, launch: dict, states: dict) -> tuple[str, str]:
        """(running | pending | stalled | lost, reason) of a point without a record whose latest job
        is `job_id` (`started_by`: the job that started it, from its run folder)."""
        if monitor_alive(launch.get("monitor")) is False:
            return "stalled", ""
        return ("running" if started_by == job_id else "pending"), ""


MIN_JOB_S = 600  # sweeper.chunk=auto on a scheduler: a job this long spends little of its time importing torch


def register(cls: type[Backend]) -> type[Backend]:
    if cls.name in BACKENDS:
        raise ValueError(f"backend {cls.name!r} registered twice")
    BACKENDS[cls.name] = cls
    return cls


def backend_class(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise OptionError(f"hydra.launcher.kind must be one of {', '.join(sorted(BACKENDS))}, got {name!r}") from None


def submitit_result(job) -> JobResult | None:
    """A submitit job's result, once its result file exists (a raised error as its last line)."""
    if not job.paths.result_pickle.exists():
        return None
    try:
        return JobResult(outcomes=list(job.result()))
    except Exception as error:  # noqa: BLE001  the job raised (e.g. not requeued after a timeout)
        lines = [line for line in str(error).splitlines() if line.strip()]
        return JobResult(error=f"job {job.job_id} failed: {lines[-1] if lines else type(error).__name__}")


def monitor_alive(monitor: dict | None) -> bool | None:
    """Is the process following a launch alive? None when it cannot be told (other host, or none)."""
    if not monitor or monitor.get("host") != socket.gethostname() or "pid" not in monitor:
        return None
    try:
        os.kill(int(monitor["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return None
    try:  # a zombie (an exited child nobody reaped) is not alive
        return Path(f"/proc/{int(monitor['pid'])}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True
