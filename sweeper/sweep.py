"""Kept for pickles only: jobs submitted before the package split refer to `sweeper.sweep.Point`."""

from .launch.planner import Point

__all__ = ["Point"]
