"""Run identity and the one skip rule (torch-free: the planner and the readers use it).

    run_dir = run_dir_of(cfg)            # <results_dir>/runs/<readable prefix>-<config hash>
    decision, error = decide(run_dir, retry_failed=False)

A point's fate is decided by what lies in its run folder:

    record.json, status ok      -> skip-ok
    record.json, status failed  -> skip-failed, or retry with sweeper.retry_failed=true
    checkpoint/ but no record   -> resume (training restarts from the checkpoint)
    nothing                     -> run

The run id hashes only the result-determining config, so the same command run twice finds the
same folders, and a new dataset or rank only adds new folders.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .records import RECORD_NAME, Status, read_existing

# Fields that cannot change a result: excluded from the run id so that they can change freely.
BOOKKEEPING_TRAIN_KEYS = {"log_every", "threads", "device", "eval_batch_size", "checkpoint_every", "save_adapter"}
CHECKPOINT_DIR = "checkpoint"  # <run_dir>/checkpoint/ (sweeper.train.checkpoint writes it)
CHECKPOINT_STEP_FILE = Path(CHECKPOINT_DIR) / "step.json"  # written last into a checkpoint: it is complete


class Decision(str, Enum):
    """What a launch does with a point."""

    RUN = "run"
    RESUME = "resume"
    RETRY = "retry"
    SKIP_OK = "skip-ok"
    SKIP_FAILED = "skip-failed"

    def __str__(self) -> str:
        return self.value

    @property
    def runs(self) -> bool:
        return self not in (Decision.SKIP_OK, Decision.SKIP_FAILED)


# ---------------------------------------------------------------- identity
def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the resolved config that determines the result."""
    train = OmegaConf.to_container(cfg.train, resolve=True)
    return {
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "train": {k: v for k, v in train.items() if k not in BOOKKEEPING_TRAIN_KEYS},
    }


def safe_name(text: Any) -> str:
    """Names become folder names: no separators, no "..", nothing a shell or filesystem treats specially."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", str(text)).strip("._") or "x"


def make_run_id(cfg: DictConfig) -> str:
    """Readable prefix + hash of the result-determining config: stable across runs and machines."""
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str).encode()
    digest = hashlib.sha256(blob).hexdigest()[:10]
    rank = f"-r{cfg.method.r}" if cfg.method.get("r") is not None else ""
    parts = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.method.name}{rank}-s{cfg.train.seed}"
    return f"{safe_name(parts)[:120]}-{digest}"


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.sweeper.results_dir).absolute() / "runs" / make_run_id(cfg)


def base_record(cfg: DictConfig, run_id: str) -> dict[str, Any]:
    """The identity fields every record of this config carries (status running until it ends)."""
    method = cfg.method
    return {
        "run_id": run_id,
        "sweep": str(cfg.sweeper.name),
        "status": Status.RUNNING,
        "error": None,
        "error_type": None,
        "dataset": str(cfg.dataset.name),
        # Dataset specs are user files: a spec without `family` / `task` still has a sensible one.
        "family": str(cfg.dataset.get("family") or str(cfg.dataset.name).split("_")[0]),
        "task": str(cfg.dataset.get("task") or "classification"),
        "model": str(cfg.model.name),
        "method": str(method.name),
        "r": method.get("r"),
        "alpha": method.get("alpha"),
        "seed": int(cfg.train.seed),
        "lr": cfg.train.lr,
        "max_steps": int(cfg.train.max_steps),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "host": socket.gethostname(),
    }


# ---------------------------------------------------------------- the skip rule
def decide(run_dir: Path, retry_failed: bool) -> tuple[Decision, str | None]:
    """(decision, earlier error) for a point whose results live in run_dir."""
    decision, record = _decide(run_dir, retry_failed)
    return decision, record.get("error") if record is not None else None


def finished_record(run_dir: Path, retry_failed: bool) -> dict[str, Any] | None:
    """The point's existing record, marked `skipped`, when the skip rule says it need not run again."""
    decision, record = _decide(run_dir, retry_failed)
    if decision.runs:
        return None
    return {**record, "skipped": True, "record_path": str(Path(run_dir) / RECORD_NAME)}


def _decide(run_dir: Path, retry_failed: bool) -> tuple[Decision, dict[str, Any] | None]:
    record = read_existing(run_dir)
    if record is not None and record["status"] == Status.OK:
        return Decision.SKIP_OK, record
    if record is not None and record["status"] == Status.FAILED:
        return (Decision.RETRY if retry_failed else Decision.SKIP_FAILED), record
    if (Path(run_dir) / CHECKPOINT_STEP_FILE).exists():
        return Decision.RESUME, None
    return Decision.RUN, None
