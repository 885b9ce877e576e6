"""Trackers: where a point's step events and final metrics go besides metrics.jsonl.

    python -m sweeper -m ... 'sweeper.trackers=[tensorboard,mlflow]'   (docs/tracking.md)

metrics.jsonl stays the source of truth. A tracker is one module with one `Tracker` subclass,
registered by name with `@register`; importing it below is its registration. Enabling a tracker is
bookkeeping (the `sweeper` section is no part of a run id): no point re-runs because of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .base import NO_SINKS, PointInfo, Sinks, Tracker

TRACKERS: dict[str, type[Tracker]] = {}


class TrackerError(ValueError):
    """An unknown tracker name (one line, naming the known ones)."""


def register(cls: type[Tracker]) -> type[Tracker]:
    if cls.name in TRACKERS:
        raise ValueError(f"tracker {cls.name!r} registered twice")
    TRACKERS[cls.name] = cls
    return cls


def check_names(names: Iterable[str]) -> list[str]:
    """The tracker names of `sweeper.trackers`, or TrackerError naming the unknown one."""
    names = [str(n) for n in names or []]
    for name in names:
        if name not in TRACKERS:
            raise TrackerError(f"sweeper.trackers: unknown tracker {name!r} (known: {', '.join(sorted(TRACKERS))})")
    return names


def open_sinks(names: Iterable[str], point: PointInfo) -> Sinks:
    """The point's trackers, opened; an unknown name or a tracker that cannot open is one error line."""
    trackers, errors = [], {}
    for name in [str(n) for n in names or []]:
        if name not in TRACKERS:
            errors[name] = f"unknown tracker (known: {', '.join(sorted(TRACKERS))})"
            continue
        try:
            trackers.append(TRACKERS[name](point))
        except Exception as error:  # noqa: BLE001  a tracker never fails a point
            from ..records import one_line

            errors[name] = f"open: {one_line(error)}"
    return Sinks(trackers, errors)


def tracker_options(sweeper_cfg: Any) -> dict[str, Any]:
    """The sweeper section's tracker options (sweeper.mlflow_uri, sweeper.mlflow_experiment)."""
    get = sweeper_cfg.get if hasattr(sweeper_cfg, "get") else (lambda k, d=None: d)
    return {"mlflow_uri": get("mlflow_uri", None), "mlflow_experiment": get("mlflow_experiment", None)}


# Registration: one import per tracker module (each decorates its class with @register).
from . import mlflow, tensorboard  # noqa: E402, F401

__all__ = ["NO_SINKS", "TRACKERS", "PointInfo", "Sinks", "Tracker", "TrackerError", "check_names", "open_sinks"]
