"""The tracker registry: names -> Tracker classes, and opening a point's trackers by name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import PointInfo, Sinks, Tracker, error_line

TRACKERS: dict[str, type[Tracker]] = {}


class TrackerError(ValueError):
    """An unknown tracker name (one line, naming the known ones)."""


def register(cls: type[Tracker]) -> type[Tracker]:
    if cls.name in TRACKERS:
        raise ValueError(f"tracker {cls.name!r} registered twice")
    TRACKERS[cls.name] = cls
    return cls


def tracker_names(names: Iterable[str] | str | None) -> list[str]:
    """`sweeper.trackers` as a list of names (`sweeper.trackers=tensorboard` is one name, not letters)."""
    return [str(names)] if isinstance(names, str) else [str(n) for n in names or []]


def check_names(names: Iterable[str] | str | None) -> list[str]:
    """The tracker names of `sweeper.trackers`, or TrackerError naming the unknown one."""
    names = tracker_names(names)
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"sweeper.trackers: unknown tracker {name!r} (known: {', '.join(sorted(TRACKERS))})")
    return names


def open_sinks(names: Iterable[str] | str | None, point: PointInfo) -> Sinks:
    """The point's trackers, opened; an unknown name or a tracker that cannot open is one error line."""
    trackers, errors = [], {}
    for name in tracker_names(names):
        if name not in TRACKERS:
            errors[name] = f"unknown tracker (known: {', '.join(sorted(TRACKERS))})"
            continue
        try:
            trackers.append(TRACKERS[name](point))
        except Exception as error:  # noqa: BLE001  a tracker never fails a point
            errors[name] = f"open: {error_line(error)}"
    return Sinks(trackers, errors)


def tracker_options(sweeper_cfg: Any) -> dict[str, Any]:
    """The sweeper section's tracker options (sweeper.mlflow_uri, sweeper.mlflow_experiment)."""
    get = sweeper_cfg.get if hasattr(sweeper_cfg, "get") else (lambda k, d=None: d)
    return {"mlflow_uri": get("mlflow_uri", None), "mlflow_experiment": get("mlflow_experiment", None)}
