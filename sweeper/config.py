"""Composing configs: the one place that turns overrides into a point's config.

    cfg = compose("model=tiny_llama", "train.max_steps=5")   # what `python -m sweeper ...` runs
    cfg = point_config(hydra_context, sweep_config, overrides, idx)   # the launcher and its jobs

`compose` is for tests, scripts and the notebook; `point_config` for the Hydra launcher plugin,
which holds a live Hydra context.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .paths import CONF_DIR


def compose(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config `python -m sweeper key=value ...` would run (hydra=True: with the hydra section)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def point_config(
    hydra_context: Any, sweep_config: DictConfig, overrides: Sequence[str], idx: int, job_id: str | None = None
) -> DictConfig:
    """One grid point's full config (hydra section included), registered as the current HydraConfig."""
    from hydra.core.hydra_config import HydraConfig

    config = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(config):
        config.hydra.job.num = idx
        if job_id is not None:
            config.hydra.job.id = job_id
    HydraConfig.instance().set_config(config)
    return config


def task_config(config: DictConfig) -> DictConfig:
    """A point's config without the hydra section: what the task function (run_point) receives."""
    return OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])


def default_results_dir(name: str | None = None, results_dir: str | None = None) -> Path:
    """sweeper.results_dir as config.yaml resolves it, for the given sweeper.name / results_dir overrides."""
    import yaml

    sweeper = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["sweeper"]
    if name is not None:
        sweeper["name"] = name
    if results_dir is not None:
        sweeper["results_dir"] = results_dir
    return Path(str(OmegaConf.create({"sweeper": sweeper}).sweeper.results_dir))
