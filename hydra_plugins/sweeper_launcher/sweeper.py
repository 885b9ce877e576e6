"""`hydra/sweeper=grid` (config.yaml's default): Hydra's BasicSweeper without its up-front check,
and with `sweeper.search=halving` successive halving over the same grid (sweeper.launch.halving).

BasicSweeper composes every point once to "validate the batch" before launching it, and the
launcher then composes it again: two full compositions a point (~0.3 s), 35 minutes before the
first sbatch of a 10,000-point grid. With sweeper's own launchers the planner composes each point
exactly once, by the cheaper route of sweeper.launch.grid, and reports the same errors; with any
other launcher (Hydra's in-process basic launcher) the check stays as Hydra has it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from .launcher import SweeperLauncher


class GridSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if isinstance(self.launcher, SweeperLauncher):
            return  # the launcher's planner composes (and so validates) every point itself
        super().validate_batch_is_legal(batch)

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        """The next batch, minus the points whose model cannot do their task, said in one line.
        With sweeper's own launchers the planner sets them apart (and the ledger counts them)."""
        batch = super().get_job_batch()
        if isinstance(self.launcher, SweeperLauncher):
            return batch
        from sweeper.launch.grid import GridComposer
        from sweeper.launch.planner import set_apart_not_applicable

        composer = GridComposer(self.hydra_context.config_loader, self.config)
        configs = [_composed(composer, overrides) for overrides in batch]
        kept = set_apart_not_applicable(batch, configs)
        _check_memory([configs[i] for i in kept], [batch[i] for i in kept])
        return [batch[i] for i in kept]

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if config.sweeper.get("dry_run") and not isinstance(self.launcher, SweeperLauncher):
            # Hydra's in-process launcher would train: plan with sweeper's planner instead (it submits nothing).
            import yaml

            from sweeper.paths import CONF_DIR

            local = yaml.safe_load((CONF_DIR / "hydra" / "launcher" / "local.yaml").read_text())
            self.launcher = SweeperLauncher(**{k: v for k, v in local.items() if k != "_target_"})
            self.launcher.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        if self.config.sweeper.get("search", "grid") == "grid":
            return super().sweep(arguments)
        from sweeper.launch.halving import HalvingError, run_halving

        if self.config.sweeper.search != "halving":
            raise SystemExit(f"error: sweeper.search must be grid or halving, got {self.config.sweeper.search!r}")
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(self._parse_config() + list(arguments))
        jobs = [list(job) for batch in self.split_arguments(overrides, None) for job in batch]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            return run_halving(self, jobs)
        except HalvingError as error:
            raise SystemExit(f"error: {error}") from None


def _check_memory(configs: list[dict | None], batch: list[Sequence[str]]) -> None:
    """Each point that will run within train.max_memory_gb (its memory estimate), before Hydra's
    launcher runs any; a point already recorded is skipped by the worker, whatever its estimate."""
    from sweeper.launch.fits import Fits
    from sweeper.launch.options import OptionError

    fits = Fits()
    try:
        for config, overrides in zip(configs, batch):
            if config is None or not config["train"].get("max_memory_gb"):
                continue
            if _will_run(config):
                fits.check_config(config, " ".join(o for o in overrides if not o.startswith("hydra.")))
    except OptionError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _will_run(config: dict) -> bool:
    """The skip rule (sweeper.runs), as the worker will apply it."""
    from sweeper.runs import decide, run_dir_of

    try:
        run_dir = run_dir_of(config)
    except ValueError:  # a bad sweeper.name: the job says so in one line
        return False
    return decide(run_dir, bool(config["sweeper"].get("retry_failed")), config=config)[0].runs


def _composed(composer, overrides) -> dict | None:
    try:
        return composer.compose(list(overrides)).config
    except Exception:  # noqa: BLE001  a point that does not compose fails in its job, with its record
        return None
