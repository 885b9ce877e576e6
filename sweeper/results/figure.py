"""What every plot of the report shares: an Agg figure without pyplot state (cluster nodes, tests,
no display), saving, the placeholder a plot with nothing to draw writes, and colours / markers."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import tasks

_COLORS = [
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:gray",
    "tab:olive",
    "tab:cyan",
]
_MARKERS = "os^*DvP<>Xhp8d"  # one per method, in name order (a method declares no marker of its own)


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def placeholder(path: str | os.PathLike, message: str) -> Path:
    fig = new_figure(6, 1.5)
    fig.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return save(fig, path)


def tasks_in(frame: pd.DataFrame) -> list:
    """The tasks (sweeper.tasks) with rows in `frame`, in the order tables show them."""
    present = set(frame["task"])
    return [task for task in tasks.all_tasks() if task.name in present]


def color_map(values) -> dict:
    return {v: _COLORS[i % len(_COLORS)] for i, v in enumerate(sorted(set(values)))}


def marker_map(values) -> dict:
    return {v: _MARKERS[i % len(_MARKERS)] for i, v in enumerate(sorted(set(values)))}
