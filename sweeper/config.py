"""Composing configs: the one place that turns overrides into a point's config.

    cfg = compose("model=tiny_llama", "train.max_steps=5")   # what `python -m sweeper ...` runs
    cfg = job_config(master, overrides, task, choices, idx)   # a launcher's job, from its plan

`compose` is for tests, scripts and the notebook; `job_config` for the jobs of the Hydra launcher
plugin, whose planner (sweeper.launch.grid) resolved each point's task config already.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from .paths import CONF_DIR


def compose(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config `python -m sweeper key=value ...` would run (hydra=True: with the hydra section)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def job_config(
    master: DictConfig,
    overrides: Sequence[str],
    task: dict[str, Any],
    choices: dict[str, str],
    idx: int,
    job_id: str | None = None,
) -> DictConfig:
    """One point's full config for Hydra's `run_job`, without composing it again: the launch's hydra
    section with this point's overrides, choices and number, and the planner's resolved task config
    (sweeper.launch.grid). Registered as the current HydraConfig, as Hydra's launchers do."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = copy.deepcopy(master)
    with open_dict(cfg), read_write(cfg.hydra):  # HydraConfig.set_config left the hydra node read-only
        for key in [k for k in cfg if k != "hydra"]:
            del cfg[key]
        for key, value in task.items():
            cfg[key] = value
        hydra = cfg.hydra
        hydra.overrides.task = list(overrides)
        hydra.runtime.choices.update(choices)
        dirname = hydra.job.config.override_dirname
        hydra.job.override_dirname = get_overrides_dirname(
            overrides=OverridesParser.create().parse_overrides(list(overrides)),
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        hydra.job.num = idx
        if job_id is not None:
            hydra.job.id = job_id
    OmegaConf.copy_cache(from_config=master, to_config=cfg)
    HydraConfig.instance().set_config(cfg)
    return cfg


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
