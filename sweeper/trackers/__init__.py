"""Trackers: where a point's step events and final metrics go besides metrics.jsonl.

    python -m sweeper -m ... 'sweeper.trackers=[tensorboard,mlflow]'   (docs/tracking.md)

metrics.jsonl stays the source of truth. A tracker is one module with one `Tracker` subclass,
registered by name with `@register`; importing it below is its registration. Enabling a tracker is
bookkeeping (the `sweeper` section is no part of a run id): no point re-runs because of it.
"""

from __future__ import annotations

# Registration: one import per tracker module (each decorates its class with @register).
from . import mlflow, tensorboard  # noqa: E402, F401, I001
from .base import NO_SINKS, PointInfo, Sinks, Tracker, error_line
from .registry import TRACKERS, TrackerError, check_names, open_sinks, register, tracker_options

__all__ = [
    "NO_SINKS",
    "TRACKERS",
    "PointInfo",
    "Sinks",
    "Tracker",
    "TrackerError",
    "check_names",
    "error_line",
    "open_sinks",
    "register",
    "tracker_options",
]
