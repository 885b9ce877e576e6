"""A sweep's ledger on disk (torch-free): `<results_dir>/sweep.json` (every launch into the folder:
who launched what, from which commit, each point's decision; written once per launch),
`<results_dir>/jobs.jsonl` (each job's points, one line appended per job as it is submitted: a
10,000-point sweep does not rewrite a 2 MB file 10,000 times) and `<run_dir>/job.json` (which job
last started a point). Written by the launcher, read by `python -m sweeper.status`.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .files import UnsafePath, atomic_write_text, file_mode, open_append, run_folder

SWEEP_FILE = "sweep.json"
JOBS_FILE = "jobs.jsonl"  # {"launch": launch_key, "job_id": ..., "run_ids": [...]} per line
JOB_MARKER = "job.json"  # <run_dir>/job.json: which job (id, host, pid) last started this point


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def array_id(job_id: Any) -> str:
    """The SLURM array a task id belongs to ("123_4" -> "123"); a plain job id is its own."""
    return str(job_id).split("_")[0]


@contextmanager
def _locked(results_dir: Path) -> Iterator[None]:
    results_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW, no truncation: a link planted at the lock's name is refused, never written through.
    fd = os.open(results_dir / f".{SWEEP_FILE}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock


def launch_key(launch: dict[str, Any]) -> str:
    return f"{launch.get('started_at')} {launch.get('hydra_sweep_dir')}"


def read_sweep(results_dir: Path | str) -> dict[str, Any]:
    """sweep.json with each launch's `jobs` filled in from jobs.jsonl."""
    path = Path(results_dir) / SWEEP_FILE
    if not path.exists():
        return {"launches": []}
    sweep = json.loads(path.read_text(encoding="utf-8"))
    by_key = {launch_key(e): e for e in sweep.get("launches", [])}
    for job in read_jobs(results_dir):
        launch = by_key.get(job.pop("launch", None))
        if launch is not None:
            launch.setdefault("jobs", []).append(job)
    return sweep


def read_jobs(results_dir: Path | str) -> list[dict[str, Any]]:
    try:
        text = (Path(results_dir) / JOBS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    jobs = []
    for line in text.splitlines():
        try:
            jobs.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash mid-append: the rest of the ledger stands
    return jobs


def log_launch(results_dir: Path, launch: dict[str, Any], update: bool = False) -> None:
    """Append `launch` to <results_dir>/sweep.json (update=True: replace the last entry with the same start).
    Its jobs live in jobs.jsonl (log_jobs), not here."""
    results_dir = Path(results_dir)
    with _locked(results_dir):
        sweep = read_sweep_file(results_dir)
        launches = sweep.setdefault("launches", [])
        entry = {**launch, "jobs": []}
        same = [i for i, e in enumerate(launches) if launch_key(e) == launch_key(launch)]
        if update and same:
            launches[same[-1]] = entry
        else:
            launches.append(entry)
        sweep["results_dir"] = str(results_dir.absolute())
        sweep["grid_size"] = len({rid for e in launches for rid in e["points"]})
        atomic_write_text(results_dir / SWEEP_FILE, json.dumps(sweep, indent=1, default=str) + "\n")


def read_sweep_file(results_dir: Path) -> dict[str, Any]:
    path = Path(results_dir) / SWEEP_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"launches": []}


def log_jobs(results_dir: Path, launch: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Append these jobs of `launch` to <results_dir>/jobs.jsonl, one line each."""
    key = launch_key(launch)
    text = "".join(json.dumps({"launch": key, **job}, default=str) + "\n" for job in jobs)
    with _locked(Path(results_dir)):
        with open_append(Path(results_dir) / JOBS_FILE) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def mark_started(run_dir: Path, job_id: str | None) -> None:
    """<run_dir>/job.json: lets `sweeper.status` tell running from pending, and find the job."""
    marker = {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now_iso()}
    try:
        atomic_write_text(run_folder(run_dir) / JOB_MARKER, json.dumps(marker) + "\n")
    except (OSError, UnsafePath):
        pass  # bookkeeping only


def marker_job(run_dir: Path) -> str | None:
    """The job id in <run_dir>/job.json, or None."""
    try:
        return str(json.loads((Path(run_dir) / JOB_MARKER).read_text())["job_id"])
    except (OSError, ValueError, KeyError):
        return None


def marker_text(run_dir: Path) -> str:
    """'job 123_4 on node1, pid 77' from <run_dir>/job.json, for messages."""
    try:
        m = json.loads((Path(run_dir) / JOB_MARKER).read_text())
    except (OSError, ValueError):
        return "no job marker"
    return f"job {m.get('job_id')} on {m.get('host')}, pid {m.get('pid')}"
