"""One JSON record per grid point: the contract between the worker and every reader.

A record is written once, atomically (temp file in the same folder, fsync, rename), so a reader
never sees half a record and a crash never corrupts one that was already there.

Layout:  <results_dir>/runs/<run_id>/record.json   (+ metrics.jsonl, adapter/, checkpoint/)
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

SCHEMA_VERSION = 1
RECORD_NAME = "record.json"
METRICS_NAME = "metrics.jsonl"  # one JSON object per logged step: {"step", "loss", "lr", ...}


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = Path(run_dir) / RECORD_NAME
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: Path) -> dict[str, Any]:
    """Read one record; raises ValueError naming the file when it is not a valid record."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable record {path}: {type(e).__name__}: {e}") from None
    if not isinstance(record, dict) or "run_id" not in record or "status" not in record:
        raise ValueError(f"invalid record {path}: missing run_id/status")
    return record


def iter_record_paths(root: Path) -> Iterator[Path]:
    """Every record.json under `root` (a results folder, a sweep folder, or one run folder)."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    yield from sorted(root.rglob(RECORD_NAME))


def atomic_rename_dir(tmp: Path, final: Path) -> None:
    """Publish a fully written folder under its final name; if another process won the race, keep theirs."""
    import shutil

    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
