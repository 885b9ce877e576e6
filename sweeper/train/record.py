"""A point's record from start to finish: where it goes, whether an earlier one stands, what an
ok point adds, and the final write (times, worker, dropped rows; the checkpoint of a finished run
removed). Shared by solo points (sweeper.train.point) and packed ones (sweeper.train.pack).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..config import default_results_dir
from ..data import dropped_rows
from ..files import UnsafePath
from ..ledger import marker_text
from ..records import RECORD_NAME, Status, note_rung, one_line, write_record
from ..runs import (
    base_record,
    check_plain_name,
    failure_fields,
    finished_record,
    resolved,
    run_dir_of,
    rung_stop,
    target_steps,
)
from . import checkpoint
from .context import SOLO, PointContext


def outcome(
    *,
    metrics: dict,
    trainable: int,
    total: int,
    steps: int,
    resumed_from_step: int,
    method,
    events: list,
    train_seconds: float,
    examples: int,
) -> dict[str, Any]:
    """The sections an ok record adds to its base record (run_point and packed points alike)."""
    return {
        "metrics": metrics,
        "params": {"trainable": trainable, "total": total},
        "train": {"steps": steps, "resumed_from_step": resumed_from_step, **method.summary(), "events": events},
        "cost": {
            "train_seconds": round(train_seconds, 3),
            "examples_per_second": round(examples / max(train_seconds, 1e-9), 2),
            "seconds_per_step": round(train_seconds / steps, 6) if steps else None,
        },
    }


def all_ranks_cost(result: dict[str, Any], rank0_peak_mb: float) -> dict[str, Any]:
    """The cost section's memory (rank 0's peak; with several ranks also their sum) and, with
    several ranks, the train seconds of all ranks together."""
    cost = result["cost"]
    others = cost.pop("rank_peak_memory_mb", [])
    if not others:
        return {"peak_memory_mb": rank0_peak_mb}
    ranks = 1 + len(others)
    return {
        "peak_memory_mb": rank0_peak_mb,
        "peak_memory_mb_all_ranks": round(rank0_peak_mb + sum(others), 1),
        "rank_seconds": round(cost["train_seconds"] * ranks, 3),
    }


def unusable_folder(
    record: dict[str, Any], run_dir: Path, started: float, error: BaseException, ctx: PointContext | None = None
) -> dict[str, Any]:
    """The failed record of a point whose run folder cannot be made or locked (or is a link: then
    it is only printed, as nothing may be written there)."""
    record.update(failure_fields(error, None), error=f"cannot use run folder {run_dir}: {one_line(error)}")
    return finish_record(record, run_dir, started, ctx)


def busy_record(record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """What a point returns (never writes) when another process is training it."""
    return {**record, "status": Status.BUSY, "error": f"being trained by another process ({marker_text(run_dir)})"}


def previous_record(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The existing record when the skip rule says this point need not run again (sweeper.runs)."""
    retry = OmegaConf.select(cfg, "sweeper.retry_failed", default=False, throw_on_resolution_failure=False)
    try:
        config = resolved(cfg)  # a bad setting's record is compared with it
    except Exception:  # noqa: BLE001  a config that does not resolve: its own failed record says why
        config = None
    return finished_record(run_dir, bool(retry), target_steps(cfg.train), config)


def start_record(cfg: DictConfig) -> tuple[dict[str, Any], Path]:
    """The point's record (status running; failed for a config that does not resolve) and its folder."""
    try:
        run_dir = run_dir_of(cfg)
        return base_record(cfg, run_dir.name), run_dir
    except Exception as error:  # noqa: BLE001
        return _unresolved_record(cfg, error)


def _unresolved_record(cfg: DictConfig, error: Exception) -> tuple[dict[str, Any], Path | None]:
    """A config that does not even resolve still gets a record, named by a hash of its raw text
    (no folder, None, when sweeper.name itself is what would leave the results folder)."""
    raw = OmegaConf.to_yaml(cfg, resolve=False)
    run_id = "unresolved-" + hashlib.sha256(raw.encode()).hexdigest()[:10]
    results_dir = OmegaConf.select(cfg, "sweeper.results_dir", default=None, throw_on_resolution_failure=False)
    results_dir = results_dir or default_results_dir()
    record = {
        "run_id": run_id,
        "sweep": str(OmegaConf.select(cfg, "sweeper.name", default="main")),
        "config_yaml": raw,
        "status": Status.FAILED,
        "error": one_line(error),
        "error_type": type(error).__name__,
    }
    try:
        check_plain_name("sweeper.name", OmegaConf.select(cfg, "sweeper.name", default="main"))
    except ValueError:
        return record, None
    return record, Path(str(results_dir)).absolute() / "runs" / run_id


def worker_context(started: float, ctx: PointContext | None = None) -> dict[str, Any]:
    """Where the point ran: the launcher's slot and job (sweeper.train.context)."""
    ctx = ctx or SOLO
    return {
        "slot": ctx.slot,
        "job_id": ctx.job_id or ctx.cluster_job,
        "pid": os.getpid(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "threads": torch.get_num_threads(),
        "started_unix": round(started, 3),
    }


def finish_record(
    record: dict[str, Any],
    run_dir: Path,
    started: float,
    ctx: PointContext | None = None,
    before_write: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Stamp times and worker, write the record atomically, drop the checkpoint of a finished run.
    `before_write` sees the stamped record last (the trackers: lifecycle.Claim.settle)."""
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record["wall_seconds"] = round(time.time() - started, 3)
    record["worker"] = {**worker_context(started, ctx), "world_size": 1, "backend": None, **record.get("worker", {})}
    if record["status"] == Status.OK:  # rows of the input the splits left out (empty text, blank label)
        record["data"] = {"dropped": dropped_rows(record["config"]["dataset"])}
    if before_write is not None:
        before_write(record)
    try:
        write_record(run_dir, record)
        if record["status"] == Status.OK:
            note_rung(record, run_dir)
        if record["status"] == Status.OK and rung_stop(record) is None:  # a rung's checkpoint is promoted from
            checkpoint.remove(run_dir)
        record["record_path"] = str(run_dir / RECORD_NAME)
    except (OSError, UnsafePath) as error:  # nothing written: the line printed is all there is
        record.update(failure_fields(error, None), error=f"cannot write record under {run_dir}: {one_line(error)}")
    return record
