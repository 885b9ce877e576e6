"""A dataset spec through its task: the checks every spec passes, then its task's own; the inputs
read, then cut into split frames by its task; the split files' columns. Called by sweeper.data.cache."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tasks
from .build import read_inputs
from .spec import SOURCES, DatasetError, as_dict, check_caps


def checked_spec(spec: Any) -> dict:
    """The spec as a plain dict with defaults filled in, or a DatasetError naming the problem."""
    spec = as_dict(spec)
    name = spec.get("name") or "?"
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*", str(name)) or ".." in str(name):
        # the name becomes the dataset's cache folder: `../x` must not reach outside it
        raise DatasetError(str(name), "name must be a plain name (letters, digits, _ . = -; no '/', no '..')")
    if spec.get("task") not in tasks.names():
        raise DatasetError(name, f"task must be one of {', '.join(tasks.names())}, got {spec.get('task')!r}")
    if spec.setdefault("source", "pool") not in SOURCES:
        raise DatasetError(name, f"source must be one of {', '.join(SOURCES)}, got {spec['source']!r}")
    spec.setdefault("seed", 0)
    spec = tasks.get(spec["task"]).check_spec(spec)
    check_caps(name, spec.get("caps"))
    return spec


def build_frames(spec: dict, hf_cache: Path | None = None) -> tuple[dict[str, pd.DataFrame], dict]:
    """(split frames, meta) of a checked spec: meta names the task, what it dropped, its labels."""
    task = tasks.get(spec["task"])
    frames, meta = task.build_frames(spec["name"], spec, read_inputs(spec, hf_cache))
    return frames, {"task": task.name, **meta}


def features(meta: dict):
    """The split files' columns (`datasets.Features`) of a materialised dataset."""
    import datasets

    return datasets.Features(tasks.get(meta["task"]).features(meta))
