"""Where a sweep's jobs run, one module per engine behind one interface (base.Backend), by name:

    local   LocalQueue: worker processes on this machine, one GPU or a share of the CPU threads each
    slurm   SlurmArrays: job arrays, streamed out while planning; squeue / sacct say what ended
    ray     RayTasks: tasks on a running Ray cluster; a detached actor follows a detached sweep

`backend_class(hydra.launcher.kind)` is the one lookup; nothing else branches on the name.
Importing this package imports no engine's client library (Ray is imported when a Ray backend is used).
"""

from . import local, ray_cluster, slurm  # noqa: F401  each registers its backend
from .base import BACKENDS, Backend, BackendError, JobResult, SubmitError, backend_class, monitor_alive

__all__ = ["BACKENDS", "Backend", "BackendError", "JobResult", "SubmitError", "backend_class", "monitor_alive"]
