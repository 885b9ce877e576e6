"""Whether each point fits the memory it will get, decided at planning (torch-free).

    fits = Fits(limit_gb, limit_key)            # train.max_memory_gb, else the launcher's memory (mem_gb)
    fits.check(point)                           # OptionError: one line, the estimate, the limit, what would fit
    print(fits.table())                         # sweeper.dry_run: the estimate of each distinct configuration

Estimates come from sweeper.memory (config and safetensors headers only), one per distinct
configuration: a 100,000-point grid over datasets has a handful.
"""

from __future__ import annotations

import json
from typing import Any

from ..memory import Estimate, estimate_point
from ..memory.fit import GB, label, refusal
from ..settings import TRAIN_SETTINGS, SettingError, check_values
from .options import OptionError

TRAIN_KEYS = ("batch_size", "max_length", "eval_batch_size", "dtype", "device")  # what the estimate reads of train


def configuration(config: dict[str, Any]) -> tuple[str, ...]:
    """What the estimate depends on: the task, the model, the method, the batch and precision."""
    train = {k: config["train"].get(k) for k in TRAIN_KEYS}
    task = (config.get("dataset") or {}).get("task")
    parts = (task, config.get("model"), config.get("method"), train)
    return tuple(json.dumps(p, sort_keys=True, default=str) for p in parts)


class Fits:
    def __init__(self, limit_gb: float | None = None, limit_key: str = "train.max_memory_gb", table: bool = False):
        """`table`: estimate every point for the dry run's table, even without a limit to check."""
        self.limit_gb, self.limit_key, self.keep_table = limit_gb, limit_key, table
        self.estimates: dict[tuple[str, ...], tuple[str, Estimate | None, int]] = {}

    def estimate(self, config: dict[str, Any]) -> Estimate | None:
        key = configuration(config)
        if key not in self.estimates:
            self.estimates[key] = (label(config), estimate_point(config), 0)
        name, estimate, count = self.estimates[key]
        self.estimates[key] = (name, estimate, count + 1)
        return estimate

    def limit(self, config: dict[str, Any]) -> tuple[float | None, str]:
        """(GB, the setting it comes from): train.max_memory_gb, else the launcher's host memory shared
        by the point's ranks (not for a CUDA point: its estimate is GPU memory, unknown here)."""
        own = config["train"].get("max_memory_gb")
        if own is None:
            device = str(config["train"].get("device") or "auto")
            if self.limit_gb is None or device.startswith("cuda"):
                return None, ""
            nproc = config["train"].get("nproc")
            ranks = nproc if isinstance(nproc, int) and not isinstance(nproc, bool) and nproc > 1 else 1
            setting = f"{self.limit_key}={self.limit_gb:g}"
            if ranks > 1:
                setting += f" shared by train.nproc={ranks} ranks ({self.limit_gb / ranks:g} GB a rank)"
            return self.limit_gb / ranks, setting
        try:
            check_values("train", {"max_memory_gb": own}, TRAIN_SETTINGS)
        except SettingError as error:
            raise OptionError(str(error)) from None
        return float(own), f"train.max_memory_gb={float(own):g}"

    def check(self, point) -> None:
        """OptionError for a point that will run and whose estimate exceeds the memory it gets."""
        if point.runs and point.config is not None:
            self.check_config(point.config, point.label)

    def check_config(self, config: dict[str, Any], name: str = "") -> None:
        limit, setting = self.limit(config)
        if not limit and not self.keep_table:  # nothing to check: planning a big grid costs nothing more
            return
        estimate = self.estimate(config)
        if estimate is not None and limit and estimate.total > limit * GB:
            raise OptionError(refusal(config, estimate, limit, setting, name))

    def table(self) -> str:
        """One line per distinct configuration: its estimate and how many points share it."""
        lines = ["memory estimate per configuration (docs/memory.md):"]
        for name, estimate, count in self.estimates.values():
            text = estimate.summary() if estimate is not None else "unknown (no local files or config sizes)"
            lines.append(f"  {name}: {text}; {count} point(s)")
        return "\n".join(lines)
