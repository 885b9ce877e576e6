"""Hydra Launcher plugins that hand a multirun batch to `sweeper.launch.launch`.

Imported by Hydra's plugin scan on every run, so it imports nothing heavy at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class SweeperLauncher(Launcher):
    """`kind`: the backend that runs the jobs (sweeper.launch.backends: local, slurm, ray); the
    rest of conf/hydra/launcher/<kind>.yaml are its options. The launch checks both."""

    def __init__(self, kind: str, **params: Any) -> None:
        self.kind, self.params = kind, OmegaConf.create(params)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sweeper.launch import launch

        return launch(
            self.kind, self.params, self.hydra_context, self.task_function, self.config, job_overrides, initial_job_idx
        )
