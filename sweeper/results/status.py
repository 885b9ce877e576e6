"""Where a sweep stands: `python -m sweeper.status results/<name> [--json]`.

    sweep results/main: 50 points, launched 2 time(s), last 2026-11-28T14:26:29+00:00
    [##############----------------]  23/50  46%  done 21  failed 2  running 2  pending 25  ETA 4m10s
    failed:
      fortune_law_vs_rest-lstm-lora-r0-s0-1a2b3c4d5e: method.r must be a positive integer, got 0

The grid is every point any launch into this folder planned (`sweep.json`); points whose model
cannot do their dataset's task are counted apart ("not applicable": never run, no record). A point is
  done / failed   its record.json says so;
  running         no record yet, its job runs (each backend says: SLURM's sacct, the local queue's
                  process, Ray's monitor) and the job has started it (<run_dir>/job.json);
  pending         waiting for its job, or for a relaunch when the launch that held it is gone;
  failed (lost)   its job ended (SLURM: CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...; Ray: its task) without a record.
ETA: points left x the rate at which points finished since the last launch started.
Reads only; safe while the sweep runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from ..ledger import SWEEP_FILE, marker_job, read_sweep
from ..records import RECORD_NAME, Status, read_many


class PointState(str, Enum):
    """Where a point stands; the first four are the counts `status` prints."""

    DONE = "done"
    FAILED = "failed"
    RUNNING = "running"
    PENDING = "pending"
    STALLED = "stalled"  # pending, and the launch that would run it is gone
    LOST = "lost"  # its SLURM job ended without a record (counted as failed)


COUNTED = {PointState.STALLED: PointState.PENDING, PointState.LOST: PointState.FAILED}


def _iso_to_unix(text: str | None) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


def sweep_status(results_dir: Path | str) -> dict[str, Any]:
    results_dir = Path(results_dir)
    if results_dir.name == SWEEP_FILE:
        results_dir = results_dir.parent
    sweep = read_sweep(results_dir)
    launches = sweep.get("launches", [])
    points: dict[str, str] = {}
    job_of: dict[str, tuple[str, dict]] = {}  # run id -> (job id, its launch): the latest launch wins
    not_applicable: set[str] = set()  # model x task combinations the planner set apart: never run
    for launch in launches:
        for run_id, info in launch.get("points", {}).items():
            points[run_id] = info.get("overrides", "")
        not_applicable.update(launch.get("not_applicable", {}))
        for job in launch.get("jobs", []):
            for run_id in job.get("run_ids", []):
                job_of[run_id] = (str(job["job_id"]), launch)
    states = _job_states(launches, job_of)
    last = launches[-1] if launches else {}
    last_start = _iso_to_unix(last.get("started_at")) or 0.0

    counts = {state.value: 0 for state in (PointState.DONE, PointState.FAILED, PointState.RUNNING, PointState.PENDING)}
    failed, stalled, finished_since, tracking = [], 0, [], []
    rungs: dict[str, int] = {}  # ok points by where they stand: stopped at a halving rung, or trained to max_steps
    paths = [str(results_dir / "runs" / run_id / RECORD_NAME) for run_id in points]
    unreadable = []  # records that do not count (unparsable, copied from another folder): re-run on relaunch
    read = read_many(paths)  # a thread pool on a slow (network) disk
    for (run_id, label), (_, record, reason) in zip(points.items(), read):
        run_dir = results_dir / "runs" / run_id
        if reason is not None:
            unreadable.append({"run_id": run_id, "overrides": label, "reason": reason})
        if record is not None and record["status"] in (Status.OK, Status.FAILED):
            tracking += [
                {"run_id": run_id, "tracker": name, "error": line}
                for name, line in (record.get("trackers") or {}).items()
                if line != "ok"
            ]
            state = PointState.DONE if record["status"] == Status.OK else PointState.FAILED
            counts[state.value] += 1
            if state == PointState.FAILED:
                failed.append({"run_id": run_id, "overrides": label, "error": record.get("error")})
            else:
                rung = (record.get("train") or {}).get("stopped_at_rung")
                where = "max_steps" if rung is None else f"rung {rung}"
                rungs[where] = rungs.get(where, 0) + 1
            t = _iso_to_unix(record.get("finished_at"))
            if t is not None and t >= last_start:
                finished_since.append(t)
            continue
        state, reason = _unfinished_state(run_dir, job_of.get(run_id), states)
        counts[COUNTED.get(state, state).value] += 1
        stalled += state == PointState.STALLED
        if state == PointState.LOST:
            failed.append({"run_id": run_id, "overrides": label, "error": f"{reason} (no record)"})
    total = len(points)
    left = counts["running"] + counts["pending"]
    elapsed = time.time() - last_start if last_start else 0.0
    rate = len(finished_since) / elapsed if elapsed > 0 and finished_since else 0.0
    eta = left / rate if rate > 0 else None
    return {
        "results_dir": str(results_dir.absolute()),
        "total": total,
        **counts,
        "not_applicable": len(not_applicable - set(points)),
        "failed_points": failed,
        "tracker_errors": tracking,  # a tracker's error never fails a point; it is shown here
        "unreadable_records": unreadable,
        "rungs": rungs if any(k.startswith("rung") for k in rungs) else {},
        "stalled": stalled,
        "eta_s": None if eta is None else round(eta, 1),
        "launches": len(launches),
        "last_launch": {k: last.get(k) for k in ("started_at", "command", "launcher", "git_sha", "monitor")},
    }


def _engine(launch: dict):
    """The backend class of a launch (launches recorded before backends had names ran on a local queue)."""
    from ..launch.backends import BACKENDS

    return BACKENDS.get(str(launch.get("launcher") or "local"), BACKENDS["local"])


def _job_states(launches: list[dict], job_of: dict[str, tuple[str, dict]]) -> dict[str, str]:
    """Each backend's word on the states of its jobs, asked once per backend for the whole sweep."""
    by_engine: dict[type, list[str]] = {}
    for job_id, launch in job_of.values():
        by_engine.setdefault(_engine(launch), []).append(job_id)
    states: dict[str, str] = {}
    for engine, job_ids in by_engine.items():
        states.update(engine.job_states([x for x in launches if _engine(x) is engine], job_ids))
    return states


def _unfinished_state(run_dir: Path, job: tuple[str, dict] | None, states: dict[str, str]) -> tuple[PointState, str]:
    """(state, reason) of a point without a record: running, pending, stalled, or lost (reason: the job's end)."""
    if job is None:
        return PointState.PENDING, ""
    job_id, launch = job
    state, reason = _engine(launch).unfinished_state(job_id, marker_job(run_dir), launch, states)
    return PointState(state), reason


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render(status: dict[str, Any], width: int = 30, max_failed: int = 20) -> str:
    total, finished = status["total"], status["done"] + status["failed"]
    last = status["last_launch"]
    lines = [
        f"sweep {status['results_dir']}: {total} points, launched {status['launches']} time(s), "
        f"last {last.get('started_at')} ({last.get('launcher')})"
    ]
    filled = int(width * finished / total) if total else 0
    if not (status["running"] or status["pending"]):
        eta = "finished"
    else:
        eta = "ETA " + _duration(status["eta_s"]) if status["eta_s"] is not None else "ETA unknown"
    pct = 100 * finished / total if total else 100.0
    lines.append(
        f"[{'#' * filled}{'-' * (width - filled)}] {finished:>4}/{total}  {pct:3.0f}%  done {status['done']}  "
        f"failed {status['failed']}  running {status['running']}  pending {status['pending']}  {eta}"
    )
    if status.get("not_applicable"):
        lines.append(
            f"not applicable: {status['not_applicable']} point(s) whose model cannot do the dataset's task "
            "(planned apart, never run; not in the counts above)"
        )
    if status.get("rungs"):
        lines.append(
            "halving: ok points "
            + ", ".join(f"{n} at {k}" for k, n in sorted(status["rungs"].items()))
            + " (successive halving: a point at a rung stopped there, or waits for its promotion)"
        )
    if status["stalled"]:
        lines.append(
            f"{status['stalled']} pending point(s) belong to a launch whose process is gone: "
            f"run the sweep's command again to finish them:\n  {last.get('command')}"
        )
    if status["failed_points"]:
        lines.append("failed:")
        for f in status["failed_points"][:max_failed]:
            lines.append(f"  {f['run_id']}: {f['error']}")
        if len(status["failed_points"]) > max_failed:
            lines.append(f"  ... and {len(status['failed_points']) - max_failed} more (--failed N shows more)")
    tracking = status.get("tracker_errors") or []
    if tracking:
        lines.append(f"tracker errors (the points trained and are recorded; sweeper.trackers): {len(tracking)}")
        lines += [f"  {t['run_id']}: {t['tracker']}: {t['error']}" for t in tracking[:max_failed]]
    unreadable = status.get("unreadable_records") or []
    if unreadable:
        lines.append(f"unreadable records (not counted; a relaunch re-runs their points): {len(unreadable)}")
        lines += [f"  {u['run_id']}: {u['reason']}" for u in unreadable[:max_failed]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m sweeper.status",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="a sweep's results folder (the one holding sweep.json)")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")
    p.add_argument("--failed", type=int, default=20, metavar="N", help="list at most N failed points (default 20)")
    args = p.parse_args(argv)
    path = Path(args.path)
    if not (path / SWEEP_FILE).exists() and not (path.name == SWEEP_FILE and path.exists()):
        print(f"error: no {SWEEP_FILE} under {path} (launched with hydra/launcher=local or slurm?)", file=sys.stderr)
        return 2
    status = sweep_status(path)
    print(json.dumps(status, indent=1) if args.json else render(status, max_failed=args.failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
