"""sweeper's own Hydra launchers: `hydra/launcher=local` and `hydra/launcher=slurm` (conf/hydra/launcher/).

A thin adapter: the sweep logic (plan, skip, submit, watch, report) lives in `sweeper.launch`.
Hydra finds this package by scanning the `hydra_plugins` namespace package (no __init__.py there).
"""
