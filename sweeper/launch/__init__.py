"""Launching a sweep (the Hydra plugin `hydra/launcher=local|slurm|ray` hands its batch to `launch`).

    driver    launch(): plan, submit (SLURM arrays stream out while planning), watch; sweeper.detach
    grid      every point's config at near-floor cost, equal to Hydra's composition (trees: helpers)
    planner   each point's run folder and decision; jobs of K points
    options   one-line errors for bad launcher and sweeper settings
    job       PointsJob: the points of one job, USR2/SIGTERM -> checkpoint + requeue
    backends  where jobs run, one interface (base.Backend) by name: LocalQueue (worker processes),
              SlurmArrays (job arrays), RayTasks (tasks on a Ray cluster)
    monitor   report points as records appear; write failed records for jobs that died

Pickles of jobs submitted before the package split refer to `sweeper.launch.PointsJob`: it stays here.
"""

from .driver import launch
from .job import PointsJob
from .planner import Point

__all__ = ["Point", "PointsJob", "launch"]
