"""The metric-sink interface every tracker implements, and the guard that keeps a tracker's error
out of the point's fate. Torch-free: the exporter and the status read it too."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..records import one_line

IDENTITY_KEYS = ("dataset", "family", "task", "model", "method", "r", "alpha", "seed", "lr", "max_steps")


@dataclass(frozen=True)
class PointInfo:
    """What a tracker knows of its point when it opens: its folder, its base record (run id, sweep,
    dataset, model, method, resolved config) and the sweeper section's tracker options."""

    run_dir: Path
    record: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


class Tracker:
    """One tracker of one point. The point's metrics.jsonl writer (train.loop.MetricsLog) calls
    `start` once, `log` with each line it writes, `flush` when it flushes; the lifecycle calls
    `finish` with the final record and `close`. Any method may raise: `Sinks` turns it into one line."""

    name: ClassVar[str]

    def __init__(self, point: PointInfo):
        self.point = point

    def start(self, step: int) -> None:
        """Training (re)starts after optimizer step `step` (0 fresh; k: resumed from a checkpoint at k)."""

    def log(self, line: dict[str, Any]) -> None:
        """One metrics.jsonl line: {"step", "loss", "lr"} or a method event {"step", "event", ...}."""

    def flush(self) -> None:
        """metrics.jsonl was flushed: a tracker that buffers sends now."""

    def finish(self, record: dict[str, Any]) -> None:
        """The point's final record (status; metrics.validation / metrics.test when ok)."""

    def close(self) -> None:
        """Release files and connections (after finish, or when the point stops or fails)."""


class Sinks:
    """The point's trackers, each behind a guard: the first error disables that tracker and is kept
    as one line (`report()` goes to the record's `trackers` section); the point trains on."""

    def __init__(self, trackers: list[Tracker] | None = None, errors: dict[str, str] | None = None):
        self.trackers = list(trackers or [])
        self.errors = dict(errors or {})

    def _call(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as error:  # noqa: BLE001  a tracker never fails a point
                self.errors[tracker.name] = f"{method}: {error_line(error)}"
                self.trackers.remove(tracker)
                try:
                    tracker.close()
                except Exception:  # noqa: BLE001, S110  already broken; its first error is the one kept
                    pass

    def start(self, step: int) -> None:
        self._call("start", step)

    def log(self, line: dict[str, Any]) -> None:
        self._call("log", line)

    def flush(self) -> None:
        self._call("flush")

    def finish(self, record: dict[str, Any]) -> None:
        self._call("finish", record)

    def close(self) -> None:
        self._call("close")
        self.trackers = []

    def report(self) -> dict[str, str]:
        """{tracker: "ok" | its error line}, for the record's `trackers` section."""
        return {**{t.name: "ok" for t in self.trackers}, **self.errors}

    def __bool__(self) -> bool:
        return bool(self.trackers)


NO_SINKS = Sinks()


def error_line(error: BaseException) -> str:
    """`ConnectionError: ...`: the type says what broke (a refused connection, a full disk) in one line."""
    return f"{type(error).__name__}: {one_line(error)}"


# ---------------------------------------------------------------- what trackers share
def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """{"validation/accuracy": ..., "test/macro_f1": ...}: the record's finite numeric scores."""
    out = {}
    for split in ("validation", "test"):
        for key, value in ((record.get("metrics") or {}).get(split) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{split}/{key}"] = float(value)
    return out


def step_scalars(line: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The (tag, value) pairs of one metrics.jsonl line: train/loss, train/lr, eval/validation_score
    (early stopping's scores), method/<event>/<field> (ReLoRA's merges, ...)."""
    event = line.get("event")
    for key, value in line.items():
        if key in ("step", "event") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if event is None:
            yield f"train/{key}", float(value)
        elif event == "validation":
            yield f"eval/validation_{key}", float(value)
        else:
            yield f"method/{event}/{key}", float(value)


def flat(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    """A nested config as (dotted key, leaf) pairs: {"method": {"r": 4}} -> ("method.r", 4)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from flat(f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        yield prefix, value


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """The point's identity fields (dataset, model, method, r, lr, seed, ...) with a value."""
    return {key: record[key] for key in IDENTITY_KEYS if record.get(key) is not None}
