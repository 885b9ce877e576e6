"""Planning a launch, independent of where it runs: each point's run folder and decision, jobs of
K points, and the records the launcher writes for jobs that died.

    points = plan(items, retry_failed=False)       # items: (job number, overrides, PointConfig)
    jobs = chunked([p for p in points if p.runs], k) # K points per job

The skip rule itself lives in sweeper.runs (the worker applies the same one).
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tasks
from ..ledger import now_iso
from ..records import Status, read_existing, record_signature, write_record_once
from ..runs import LOST_ERROR, Decision, base_record, decide, run_dir_of, target_steps, uses_model


@dataclass
class Point:
    """One grid point of this launch."""

    idx: int  # Hydra's job number (hydra.job.num)
    overrides: list[str]
    run_id: str | None = None  # None when the config does not resolve (the worker records that)
    run_dir: Path | None = None
    results_dir: Path | None = None
    decision: Decision = Decision.RUN
    error: str | None = None  # the earlier failure, for skip-failed / retry
    prior: tuple | None = None  # the record file as planning found it (record_signature): any change is new
    config: dict[str, Any] | None = field(default=None, repr=False)  # resolved task config (launch.grid)
    choices: dict[str, str] = field(default_factory=dict)  # its group options (hydra.runtime.choices)

    @property
    def runs(self) -> bool:
        return Decision(self.decision).runs

    @property
    def nproc(self) -> int:
        """train.nproc: processes per point (the worker says so in one line when it is no integer)."""
        value = ((self.config or {}).get("train") or {}).get("nproc", 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 1 else 1

    @property
    def label(self) -> str:
        return " ".join(o for o in self.overrides if not o.startswith("hydra.")) or f"#{self.idx}"


def plan(items: Iterable[tuple[int, list[str], Any]], retry_failed: bool) -> list[Point]:
    """items: (job number, overrides, PointConfig); returns one decided Point per item."""
    return list(iter_plan(items, retry_failed))


def iter_plan(items: Iterable[tuple[int, list[str], Any]], retry_failed: bool) -> Iterator[Point]:
    """plan() one point at a time: the launcher submits the first array while later points are planned."""
    seen = set()
    for idx, overrides, composed in items:
        point = Point(idx, list(overrides), config=composed.config, choices=composed.choices)
        try:
            run_dir = run_dir_of(point.config)
        except Exception as error:  # noqa: BLE001  unresolvable config: the job writes its failed record
            point.error = " ".join(str(error).split())[:300]
        else:
            point.run_id, point.run_dir, point.results_dir = run_dir.name, run_dir, run_dir.parent.parent
            mismatch = model_mismatch(point.config)
            if mismatch:  # known before anything runs: no job, no record, one line for them all
                point.decision, point.error = Decision.NOT_APPLICABLE, mismatch
                yield point
                continue
            want = target_steps(point.config["train"])
            point.decision, point.error = decide(run_dir, retry_failed, want, point.config)
            point.prior = record_signature(run_dir)
            if point.run_id in seen:  # one folder, one writer: the first of the identical points runs
                point.decision = Decision.DUPLICATE
            seen.add(point.run_id)
        yield point


def model_mismatch(config: dict[str, Any]) -> str | None:
    """Why a point's model cannot do its dataset's task (sweeper.tasks: Task.model_mismatch), or
    None; a method that uses no model (tfidf) fits any."""
    if not uses_model(config):
        return None
    task = tasks.find((config.get("dataset") or {}).get("task"))
    return None if task is None else task.model_mismatch(config.get("model") or {})


def set_apart_not_applicable(jobs: Sequence[Sequence[str]], configs: Sequence[dict | None]) -> list[int]:
    """For a launch that plans without the planner (Hydra's own launcher, halving's groups): print
    the one not-applicable line and return the indices of the other points (a None config, one
    that did not compose, stays: its job records why)."""
    points = [Point(i, list(o), config=c) for i, (o, c) in enumerate(zip(jobs, configs))]
    for point in points:
        if point.config is not None and model_mismatch(point.config):
            point.decision = Decision.NOT_APPLICABLE
    message = not_applicable_message(points)
    if message:
        print(message, flush=True)
    return [p.idx for p in points if p.decision != Decision.NOT_APPLICABLE]


def not_applicable_message(points: Sequence[Point]) -> str | None:
    """One line for the points whose model cannot do their task: how many, which, and the fix."""
    skipped = [p for p in points if p.decision == Decision.NOT_APPLICABLE]
    if not skipped:
        return None
    pairs = Counter((p.config["model"].get("name"), p.config["dataset"].get("task")) for p in skipped)
    what = ", ".join(f"{model} x {task}: {n}" for (model, task), n in sorted(pairs.items()))
    needed = sorted({task for _, task in pairs})
    fitting = models_for(needed)
    asked = ",".join(sorted({str(model) for model, _ in pairs}))
    example = f", e.g. model={asked},{fitting[0]}" if fitting else ""
    return (
        f"{len(skipped)} point(s) not applicable, not run and not recorded ({what}): "
        f"{'/'.join(needed)} datasets need another model{example} "
        f"(models that can: {', '.join(fitting) or 'none in conf/model'})"
    )


def models_for(task_names: list[str]) -> list[str]:
    """The conf/model options that can do every one of these tasks."""
    from ..cli import group_options, option_body

    found = [tasks.find(name) for name in task_names]
    return [
        option
        for option in group_options("model")
        if (body := option_body("model", option)) is not None
        and not any(task is not None and task.model_mismatch(body) for task in found)
    ]


def median_point_seconds(results_dir: Path, sample: int = 200) -> float | None:
    """How long a point of this folder took (median wall seconds of the ok records among the first
    `sample` run folders), or None before any; sweeper.chunk=auto sizes jobs with it."""
    seconds = []
    try:
        folders = [e.path for _, e in zip(range(sample), os.scandir(Path(results_dir) / "runs"))]
    except OSError:
        return None
    for folder in folders:
        record = read_existing(Path(folder))
        if record is None:
            continue
        if record.get("status") == Status.OK and isinstance(record.get("wall_seconds"), (int, float)):
            seconds.append(float(record["wall_seconds"]))
    return statistics.median(seconds) if seconds else None


def summarize(points: Sequence[Point]) -> dict[str, int]:
    counts = {"grid": len(points)}
    for p in points:
        counts[str(p.decision)] = counts.get(str(p.decision), 0) + 1
    counts["to_run"] = sum(p.runs for p in points)
    return counts


def plan_message(counts: dict[str, int]) -> str:
    """'grid of 12: skipping 8 already ok, 1 failed earlier (sweeper.retry_failed=true re-runs it); running 3 (1 resumes)'."""
    parts = []
    if counts.get(Decision.SKIP_OK):
        parts.append(f"skipping {counts[Decision.SKIP_OK]} already ok")
    if counts.get(Decision.DUPLICATE):
        parts.append(f"{counts[Decision.DUPLICATE]} identical to another point (e.g. method=tfidf ignores model)")
    if counts.get(Decision.NOT_APPLICABLE):
        parts.append(f"{counts[Decision.NOT_APPLICABLE]} not applicable (model x task)")
    if counts.get(Decision.SKIP_FAILED):
        n = counts[Decision.SKIP_FAILED]
        parts.append(f"{n} failed earlier (sweeper.retry_failed=true re-runs {'it' if n == 1 else 'them'})")
    extra = [
        f"{counts[k]} {w}"
        for k, w in (
            (Decision.RESUME, "resume from a checkpoint"),
            (Decision.RETRY, "retry a failure"),
            (Decision.RERUN_LOST, "re-run after their job died"),
            (Decision.RERUN_TRANSIENT, "re-run after a transient failure (disk, I/O, a corrupt file)"),
        )
        if counts.get(k)
    ]
    run = f"running {counts['to_run']}" + (f" ({', '.join(extra)})" if extra else "")
    return f"grid of {counts['grid']}: " + ", ".join(parts + [run if counts["to_run"] else "nothing to run"])


def chunked(points: Sequence[Point], k: int) -> list[list[Point]]:
    """Consecutive groups of k points (k <= 1: one point per job)."""
    k = max(1, int(k or 1))
    return [list(points[i : i + k]) for i in range(0, len(points), k)]


# ---------------------------------------------------------------- records written for the jobs
def lost_record(point: Point, error: str) -> dict[str, Any]:
    """A failed record for a point whose job died without writing one (scancel, SIGKILL, OOM)."""
    record = base_record(point.config, point.run_id)
    record.update(status=Status.FAILED, error=error, error_type=LOST_ERROR, finished_at=now_iso())
    return record


def write_lost_record(point: Point, error: str) -> bool:
    """Write it only where the point has no record at all (an exclusive create: a record the job
    wrote, even one this filesystem does not show yet, wins); True when written."""
    if point.run_dir is None or point.config is None or point.prior is not None:
        return False
    return write_record_once(point.run_dir, lost_record(point, error))
