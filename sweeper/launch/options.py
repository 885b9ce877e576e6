"""One-line errors for bad launcher and sweeper settings, before anything is planned or submitted.

A `workers: 0` local queue would wait forever, `poll_s: 0` spins a core. Each backend names its
own settings (backends/<name>.py: POSITIVE, check_options); the sweeper's are checked here.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import OmegaConf

from ..files import UnsafePath


class OptionError(ValueError):
    pass


def check_options(backend: Any, params: Any, sweep: Any) -> None:
    """Raise OptionError naming the first bad setting (`backend`: the launch's Backend class)."""
    backend.check_options(params)
    if int(params.get("max_num_timeout", 0)) < 0:
        raise OptionError(f"hydra.launcher.max_num_timeout must be >= 0, got {params.max_num_timeout!r}")
    for key in ("chunk", "pack"):
        value = sweep.get(key)
        if key == "chunk" and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            also = " or auto" if key == "chunk" else ""
            raise OptionError(f"sweeper.{key} must be a positive integer{also}, got {value!r}")
    check_trackers(sweep)


def check_positive(params: Any, keys: dict[str, bool]) -> None:
    """Each of `keys` (key -> may it be null?) a positive number."""
    for key, nullable in keys.items():
        value = params.get(key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise OptionError(f"hydra.launcher.{key} must be a positive number, got {value!r}")


def check_trackers(sweep: Any) -> None:
    """sweeper.trackers names registered trackers (a typo stops the launch, not each point's tracking)."""
    from ..trackers import TrackerError, check_names

    try:
        check_names(sweep.get("trackers"))
    except TrackerError as error:
        raise OptionError(str(error)) from None
    except TypeError:  # sweeper.trackers=5
        raise OptionError(f"sweeper.trackers must be a list of tracker names, got {sweep.get('trackers')!r}") from None


def one_line_os_errors(launch: Callable) -> Callable:
    """`launch`, with an OSError (a read-only or full results folder, a missing sbatch) or a planted
    link in the results folder ending the command in one line and exit status 2, not a traceback."""

    @functools.wraps(launch)
    def checked(*args, **kwargs):
        try:
            return launch(*args, **kwargs)
        except (OSError, UnsafePath) as error:
            where = f": {error.filename}" if getattr(error, "filename", None) else ""
            print(f"error: {getattr(error, 'strerror', None) or error}{where}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return checked


def check_ranks(point, config) -> None:
    """OptionError for a point whose train.nproc this launch cannot give it."""
    if point.nproc == 1 or not point.runs:
        return
    if int(config.sweeper.pack or 1) > 1:
        raise OptionError(
            f"sweeper.pack={config.sweeper.pack} with train.nproc={point.nproc} ({point.label}): "
            "a pack trains in one process; use one or the other"
        )
    nodes = int(OmegaConf.select(config, "hydra.launcher.nodes", default=1) or 1)
    if point.nproc % nodes:
        raise OptionError(f"train.nproc={point.nproc} is not a multiple of hydra.launcher.nodes={nodes}")
