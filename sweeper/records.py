"""One JSON record per grid point: the contract between the worker and every reader (torch-free).

A record is written once, atomically (temp file in the same folder, fsync, rename), so a reader
never sees half a record and a crash never corrupts one that was already there.

Layout:  <results_dir>/runs/<run_id>/record.json   (+ metrics.jsonl, adapter/, checkpoint/)
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

from .files import UnsafePath, atomic_write_text, file_mode, open_append, read_text, run_folder

SCHEMA_VERSION = 2  # 2: metrics.validation + metrics.test sections (1: test scores only, at the top level)
RECORD_NAME = "record.json"
RUNGS_NAME = "rungs.jsonl"  # successive halving: one line per rung the point reached (steps, validation scores)
PREDICTIONS_NAME = "predictions.parquet"  # classification: row, label, pred of each test row
METRICS_NAME = "metrics.jsonl"  # one JSON object per logged step: {"step", "loss", "lr", ...}
# Subfolders of a run that never hold records but may hold many files.
EXPORT_ARTIFACTS = "mlflow-artifacts"  # <results>/mlflow-artifacts: record.json copies an export keeps (not records)
_NOT_RECORDS = {"adapter", "checkpoint", "checkpoints", "report", "__pycache__", ".cache", EXPORT_ARTIFACTS}


class Status(str, Enum):
    """A record's `status`. A str, so JSON and comparisons with plain strings are unchanged."""

    RUNNING = "running"  # only ever in memory: a record on disk is final
    OK = "ok"
    FAILED = "failed"
    BUSY = "busy"  # only ever returned, never written: another process holds the run folder's lock

    def __str__(self) -> str:  # f-strings and str() give "ok", as the JSON does
        return self.value


# ---------------------------------------------------------------- records
def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write (or replace) the run folder's record atomically; UnsafePath when the folder is a link."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = run_folder(run_dir) / RECORD_NAME
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


def write_record_once(run_dir: Path, record: dict[str, Any]) -> bool:
    """Create the record only if none exists (False if one does). os.link is an exclusive create
    that NFS performs on the server, so a record written on a compute node that this machine does
    not list yet (negative dentry cache) still wins; os.replace would overwrite it."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    path = run_folder(run_dir) / RECORD_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{RECORD_NAME}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def record_signature(run_dir: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime_ns) of a run folder's record, None when absent: a changed signature is a
    new record. It compares the file with itself, never with this machine's clock."""
    try:
        st = (Path(run_dir) / RECORD_NAME).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_record(path: Path | str) -> dict[str, Any]:
    """Read one record; raises ValueError naming the file when it is not a valid record of its
    folder (unparsable, a link, fields of the wrong type, or copied from another run folder)."""
    path = Path(path)
    try:
        record = json.loads(read_text(path))
    except UnsafePath:
        raise ValueError(f"unreadable record {path}: a symbolic link") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable record {path}: {type(e).__name__}: {e}") from None
    problem = record_problem(record, path)
    if problem is not None:
        raise ValueError(f"invalid record {path}: {problem}")
    return record


# Fields whose type readers rely on (absent is fine: failed and older records lack some).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "status": (str,),
    "error": (str, type(None)),
    "metrics": (dict,),
    "train": (dict,),
    "cost": (dict,),
    "params": (dict,),
    "config": (dict,),
    "worker": (dict,),
    "seed": (int,),
    "max_steps": (int,),
}


def record_problem(record: Any, path: Path) -> str | None:
    """Why `record`, read from `path`, cannot be counted (None: it can)."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    missing = [f for f in ("run_id", "status") if f not in record]
    if missing:
        return f"missing {'/'.join(missing)}"
    for field, types in FIELD_TYPES.items():
        value = record.get(field, types[0]())  # absent: fine
        if isinstance(value, bool) or not isinstance(value, types):
            return f"{field} is a {type(value).__name__} ({str(value)[:40]!r}), not {' or '.join(t.__name__ for t in types)}"
    if record["status"] not in (Status.OK, Status.FAILED):
        return f"status {record['status']!r} is neither ok nor failed"
    metrics = record.get("metrics") or {}
    for section in ("validation", "test"):
        if not isinstance(metrics.get(section, {}), dict):
            return f"metrics.{section} is not an object"
    if path.name == RECORD_NAME and record["run_id"] != path.parent.name:
        return f"run_id {record['run_id']!r} is not its folder's: copied from another run folder?"
    return None


def read_existing(run_dir: Path) -> dict[str, Any] | None:
    """The record of a run folder, or None (absent or unreadable: an unreadable record is re-run)."""
    path = Path(run_dir) / RECORD_NAME
    if os.path.islink(run_dir) or not path.exists():  # a linked run folder holds nothing of ours
        return None
    try:
        return read_record(path)
    except ValueError:
        return None


def append_rung(run_dir: Path, rung: int, steps: int, validation: dict[str, Any]) -> None:
    """Successive halving: what the point scored at a rung. The record is rewritten when the point
    is promoted; this file keeps every rung, so a relaunch decides each rung as it was decided."""
    line = json.dumps({"rung": rung, "steps": steps, "validation": validation}, default=str)
    with open_append(run_folder(run_dir) / RUNGS_NAME) as f:
        f.write(line + "\n")


def note_rung(record: dict[str, Any], run_dir: Path) -> None:
    """A halving wave's ok point: its rung's validation scores to rungs.jsonl, once its record is
    written (a line without the record would promote a point whose record says otherwise)."""
    rung = (((record.get("config") or {}).get("sweeper") or {}).get("halving") or {}).get("rung")
    if rung is not None:
        append_rung(run_dir, int(rung), record["train"]["steps"], record["metrics"]["validation"])


def read_rungs(run_dir: Path) -> dict[int, dict[str, Any]]:
    """{rung: its last line} of rungs.jsonl ({} without one; a torn line is skipped)."""
    rungs = {}
    try:
        if os.path.islink(run_dir):  # a linked run folder holds nothing of ours
            return rungs
        text = read_text(Path(run_dir) / RUNGS_NAME)
    except (OSError, UnsafePath):
        return rungs
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            rungs[int(entry["rung"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return rungs


IO_THREADS = 16  # records often live on NFS: overlap the per-file latency
PROBE, SLOW_READ_S = 64, 0.0005  # mean seconds per record read above which threads pay off


def _read_one(path: str) -> tuple[str, dict | None, str | None]:
    try:
        return path, read_record(path), None
    except ValueError as e:
        if not os.path.exists(path):
            return path, None, None  # no record (yet): nothing wrong with one
        return path, None, str(e).replace(f" {path}", "")  # the listing names the file already
    except Exception as e:  # a reader must never die on one strange file
        return path, None, f"{type(e).__name__}: {e}"


def _read_chunk(paths: list[str]) -> list[tuple[str, dict | None, str | None]]:
    return [_read_one(p) for p in paths]


def read_many(paths: list[str]) -> list[tuple[str, dict | None, str | None]]:
    """(path, record, None), (path, None, reason) for an unreadable one, or (path, None, None) for
    an absent one, in order. Serial on a local disk (threads only fight over the GIL there); a
    thread pool once the first reads show network-filesystem latency, where overlapping the waits
    is what matters (collect and status over 100,000 records)."""
    from concurrent.futures import ThreadPoolExecutor
    from time import perf_counter

    start = perf_counter()
    results = _read_chunk(paths[:PROBE])
    rest = paths[PROBE:]
    if not rest or (perf_counter() - start) / max(len(results), 1) < SLOW_READ_S:
        return results + _read_chunk(rest)
    chunks = [rest[i : i + 64] for i in range(0, len(rest), 64)]
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return results + [r for chunk in pool.map(_read_chunk, chunks) for r in chunk]


def find_records(*roots: str | os.PathLike) -> list[str]:
    """Every record.json under the given folders (or the files themselves), de-duplicated, sorted.

    Overlapping arguments (results/ and results/sweep_a) yield each file once: files are keyed by
    the real path of their root plus the path below it (one realpath per root, not per file).
    """
    seen: dict[str, str] = {}
    for root in map(str, roots):
        real_root = os.path.realpath(root)
        if os.path.isfile(root):
            seen.setdefault(real_root, root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            if RECORD_NAME in filenames:
                path = os.path.join(dirpath, RECORD_NAME)
                seen.setdefault(real_root + path[len(root) :], path)
                dirnames.clear()  # a run folder: nothing below it is a record
            else:
                dirnames[:] = [d for d in dirnames if d not in _NOT_RECORDS]
    return sorted(seen.values())  # str, not Path: 10,000 Path objects cost more than the parsing


# ---------------------------------------------------------------- one-line texts
def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."
