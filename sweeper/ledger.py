"""A sweep's ledger on disk (torch-free): `<results_dir>/sweep.json` (every launch into the folder:
who launched what, from which commit, each point's decision, each job's points) and
`<run_dir>/job.json` (which job last started a point). Written by the launcher, read by
`python -m sweeper.status`.
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

from .records import atomic_write_text

SWEEP_FILE = "sweep.json"
JOB_MARKER = "job.json"  # <run_dir>/job.json: which job (id, host, pid) last started this point


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def array_id(job_id: Any) -> str:
    """The SLURM array a task id belongs to ("123_4" -> "123"); a plain job id is its own."""
    return str(job_id).split("_")[0]


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


def log_launch(results_dir: Path, launch: dict[str, Any], update: bool = False) -> None:
    """Append `launch` to <results_dir>/sweep.json (update=True: replace the last entry with the same start)."""
    results_dir = Path(results_dir)
    with _locked(results_dir):
        sweep = read_sweep(results_dir)
        launches = sweep.setdefault("launches", [])
        same = [
            i
            for i, e in enumerate(launches)
            if e["started_at"] == launch["started_at"] and e["hydra_sweep_dir"] == launch["hydra_sweep_dir"]
        ]
        if update and same:
            launches[same[-1]] = launch
        else:
            launches.append(launch)
        sweep["results_dir"] = str(results_dir.absolute())
        sweep["grid_size"] = len({rid for e in launches for rid in e["points"]})
        atomic_write_text(results_dir / SWEEP_FILE, json.dumps(sweep, indent=1, default=str) + "\n")


def mark_started(run_dir: Path, job_id: str | None) -> None:
    """<run_dir>/job.json: lets `sweeper.status` tell running from pending, and find the job."""
    marker = {"job_id": job_id, "host": socket.gethostname(), "pid": os.getpid(), "started_at": now_iso()}
    try:
        atomic_write_text(Path(run_dir) / JOB_MARKER, json.dumps(marker) + "\n")
    except OSError:
        pass  # bookkeeping only


def marker_job(run_dir: Path) -> str | None:
    """The job id in <run_dir>/job.json, or None."""
    try:
        return str(json.loads((Path(run_dir) / JOB_MARKER).read_text())["job_id"])
    except (OSError, ValueError, KeyError):
        return None
