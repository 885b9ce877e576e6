"""The one line a sweep prints per finished point: its name, its task's headline scores, its cost."""

from __future__ import annotations

from typing import Any

from . import tasks
from .records import Status


def summary_line(record: dict[str, Any]) -> str:
    """One line per finished point, printed by the sweep."""
    name = f"{record.get('dataset')} {record.get('model')} {record.get('method')}"
    if record.get("r") is not None:
        name += f" r={record['r']}"
    if record["status"] == Status.BUSY:
        return f"[busy] {name}: {record['error']}"
    if record["status"] != Status.OK:
        return f"[FAILED] {name}: {record['error']}"
    task = tasks.find(record.get("task")) or tasks.get(tasks.DEFAULT)
    score = task.score_line(record["metrics"])
    train = record.get("train") or {}
    if train.get("stopped_at_rung") is not None:  # successive halving paused it there
        score += f", halving rung {train['stopped_at_rung']} (step {train.get('steps')})"
    broken = [name for name, line in (record.get("trackers") or {}).items() if line != "ok"]
    tracking = f" (tracker error: {', '.join(broken)}; see the record's `trackers`)" if broken else ""
    return f"[ok] {name}: {score}, {record['cost']['train_seconds']:.1f}s train{tracking}"
