"""A sweep's bookkeeping, independent of where it runs: plan (skip / resume / re-run), chunk, sweep.json.

    points = plan(configs, retry_failed=False)      # one Point per grid point, each with its decision
    jobs = chunked([p for p in points if p.runs], k) # K points per job
    log_launch(results_dir, {...})                   # append an entry to <results_dir>/sweep.json

A point's fate is decided by what lies in its run folder (`<results_dir>/runs/<run_id>`):

    record.json, status ok      -> skip                   ("done")
    record.json, status failed  -> skip, or re-run with sweeper.retry_failed=true
    checkpoint/ but no record   -> run; training resumes from the checkpoint
    nothing                     -> run

The run id hashes only the result-determining config (`sweeper.worker.make_run_id`), so the same
command run twice finds the same folders, and a new dataset or rank only adds new folders.
"""
from __future__ import annotations

import fcntl
import getpass
import json
import os
import shlex
import socket
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

from .records import RECORD_NAME, atomic_write_text, read_record, write_record

SWEEP_FILE = "sweep.json"
JOB_MARKER = "job.json"  # <run_dir>/job.json: which job (id, host, pid) last started this point


@dataclass
class Point:
    """One grid point of this launch."""

    idx: int                      # Hydra's job number (hydra.job.num)
    overrides: list[str]
    run_id: str | None = None     # None when the config does not resolve (the worker records that)
    run_dir: Path | None = None
    results_dir: Path | None = None
    decision: str = "run"         # run | resume | retry | skip-ok | skip-failed
    error: str | None = None      # the earlier failure, for skip-failed / retry
    since: float = 0.0            # when it was planned: a record older than this is not this launch's
    cfg: Any = field(default=None, repr=False)  # the composed config (launcher side only, never pickled)

    @property
    def runs(self) -> bool:
        return not self.decision.startswith("skip")

    @property
    def label(self) -> str:
        return " ".join(o for o in self.overrides if not o.startswith("hydra.")) or f"#{self.idx}"

    def __getstate__(self):  # jobs carry their points: leave the heavy config behind
        return {**self.__dict__, "cfg": None}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_existing(run_dir: Path) -> dict[str, Any] | None:
    """The point's record, or None (absent or unreadable: an unreadable record is re-run)."""
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        return read_record(path)
    except ValueError:
        return None


def decide(run_dir: Path, retry_failed: bool) -> tuple[str, str | None]:
    """(decision, earlier error) for a point whose results live in run_dir."""
    record = read_existing(run_dir)
    if record is not None and record.get("status") == "ok":
        return "skip-ok", None
    if record is not None and record.get("status") == "failed":
        return ("retry" if retry_failed else "skip-failed"), record.get("error")
    if (Path(run_dir) / "checkpoint" / "step.json").exists():
        return "resume", None
    return "run", None


def plan(items: Sequence[tuple[int, list[str], Any]], retry_failed: bool) -> list[Point]:
    """items: (job number, overrides, composed config); returns one decided Point per item."""
    from .worker import run_dir_of  # imports torch: only the launcher and the jobs pay for it

    points = []
    for idx, overrides, cfg in items:
        point = Point(idx, list(overrides), cfg=cfg)
        try:
            run_dir = run_dir_of(cfg)
        except Exception as error:  # noqa: BLE001  unresolvable config: the job writes its failed record
            point.error = " ".join(str(error).split())[:300]
        else:
            point.run_id, point.run_dir, point.results_dir = run_dir.name, run_dir, run_dir.parent.parent
            point.decision, point.error = decide(run_dir, retry_failed)
        points.append(point)
    return points


def summarize(points: Sequence[Point]) -> dict[str, int]:
    counts = {"grid": len(points)}
    for p in points:
        counts[p.decision] = counts.get(p.decision, 0) + 1
    counts["to_run"] = sum(p.runs for p in points)
    return counts


def plan_message(counts: dict[str, int]) -> str:
    """'grid 12: skipping 8 already ok, 1 failed earlier (sweeper.retry_failed=true re-runs it); running 3 (1 resumes)'."""
    parts = []
    if counts.get("skip-ok"):
        parts.append(f"skipping {counts['skip-ok']} already ok")
    if counts.get("skip-failed"):
        n = counts["skip-failed"]
        parts.append(f"{n} failed earlier (sweeper.retry_failed=true re-runs {'it' if n == 1 else 'them'})")
    extra = [f"{counts[k]} {w}" for k, w in (("resume", "resume from a checkpoint"), ("retry", "retry a failure")) if counts.get(k)]
    run = f"running {counts['to_run']}" + (f" ({', '.join(extra)})" if extra else "")
    return f"grid of {counts['grid']}: " + ", ".join(parts + [run if counts["to_run"] else "nothing to run"])


def chunked(points: Sequence[Point], k: int) -> list[list[Point]]:
    """Consecutive groups of k points (k <= 1: one point per job)."""
    k = max(1, int(k or 1))
    return [list(points[i : i + k]) for i in range(0, len(points), k)]


# ---------------------------------------------------------------- records written for the jobs
def lost_record(point: Point, error: str) -> dict[str, Any]:
    """A failed record for a point whose job died without writing one (scancel, SIGKILL, OOM)."""
    from .worker import base_record

    record = base_record(point.cfg, point.run_id)
    record.update(status="failed", error=error, error_type="JobLost", finished_at=now_iso())
    return record


def write_lost_record(point: Point, error: str) -> bool:
    """Write it unless the point has a record by now (the job may have finished after all)."""
    if point.run_dir is None or point.cfg is None:
        return False
    record_path = point.run_dir / RECORD_NAME
    if record_path.exists() and record_path.stat().st_mtime >= point.since:
        return False
    write_record(point.run_dir, lost_record(point, error))
    return True


def mark_started(run_dir: Path, job_id: str | None) -> None:
    """<run_dir>/job.json: lets `sweeper.status` tell running from pending, and find the job."""
    try:
        atomic_write_text(Path(run_dir) / JOB_MARKER, json.dumps(
            {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now_iso()}) + "\n")
    except OSError:
        pass  # bookkeeping only


# ---------------------------------------------------------------- sweep.json
def command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(os.path.join("sweeper", "__main__.py")):
        argv[0:1] = ["python", "-m", "sweeper"]
    return shlex.join(argv)


def git_state(cwd: Path | str | None = None) -> dict[str, Any]:
    cwd = str(cwd or Path(__file__).resolve().parents[1])

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(dirty) if dirty is not None else None}


@contextmanager
def _locked(results_dir: Path) -> Iterator[None]:
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / f".{SWEEP_FILE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_sweep(results_dir: Path | str) -> dict[str, Any]:
    path = Path(results_dir) / SWEEP_FILE
    if not path.exists():
        return {"launches": []}
    return json.loads(path.read_text(encoding="utf-8"))


def new_launch(points: Sequence[Point], launcher: str, sweep_cfg: Any, hydra_sweep_dir: str) -> dict[str, Any]:
    """The launch entry: who launched what, from which commit, and each point's decision."""
    return {
        "started_at": now_iso(),
        "command": command_line(),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        **git_state(),
        "launcher": launcher,
        "hydra_sweep_dir": str(Path(hydra_sweep_dir).absolute()),
        "chunk": int(sweep_cfg.get("chunk") or 1),
        "detach": bool(sweep_cfg.get("detach")),
        "retry_failed": bool(sweep_cfg.get("retry_failed")),
        "counts": summarize(points),
        "points": {p.run_id: {"overrides": p.label, "decision": p.decision} for p in points if p.run_id},
        "jobs": [],     # [{"job_id": ..., "run_ids": [...]}], filled as jobs are submitted
        "monitor": None,  # local queue: {"pid", "host", "log"} of the process running it
    }


def log_launch(results_dir: Path, launch: dict[str, Any], update: bool = False) -> None:
    """Append `launch` to <results_dir>/sweep.json (update=True: replace the last entry with the same start)."""
    results_dir = Path(results_dir)
    with _locked(results_dir):
        sweep = read_sweep(results_dir)
        launches = sweep.setdefault("launches", [])
        same = [i for i, e in enumerate(launches) if e.get("started_at") == launch["started_at"]
                and e.get("hydra_sweep_dir") == launch["hydra_sweep_dir"]]
        if update and same:
            launches[same[-1]] = launch
        else:
            launches.append(launch)
        sweep["results_dir"] = str(results_dir.absolute())
        sweep["grid_size"] = len({rid for e in launches for rid in e.get("points", {})})
        atomic_write_text(results_dir / SWEEP_FILE, json.dumps(sweep, indent=1, default=str) + "\n")
