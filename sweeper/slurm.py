"""What SLURM says of a sweep's tasks (torch-free; shared by the launcher's monitor and `sweeper.status`)."""

from __future__ import annotations

from . import shell
from .ledger import array_id

# States of a task that has not ended (sacct / squeue names).
SLURM_ALIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "COMPLETING",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "PREEMPTED",
    "STAGE_OUT",
    "SIGNALING",
}


SACCT_BATCH = 200  # array ids per sacct call: the argument list stays far below the kernel's limit


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """{task id: first word of its state}, asking sacct per array (a few ids), not per task: a
    100,000-task sweep is ~100 arrays. Pending tasks sacct lists as `123_[4-9%2]` are expanded."""
    arrays = sorted({array_id(j) for j in job_ids})
    states: dict[str, str] = {}
    for start in range(0, len(arrays), SACCT_BATCH):
        batch = ",".join(arrays[start : start + SACCT_BATCH])
        out = shell.output(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", batch])
        for line in (out or "").splitlines():
            job, _, state = line.partition("|")
            if state:
                for task in expand_task_ids(job.strip()):
                    states[task] = state.split()[0]
    return states


def expand_task_ids(job: str) -> list[str]:
    """'123_[4-6,9%2]' -> ['123_4', '123_5', '123_6', '123_9']; any other id as it is."""
    array, sep, rest = job.partition("_[")
    if not sep:
        return [job]
    tasks = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            tasks += [f"{array}_{i}" for i in range(int(low), int(high or low) + 1)]
    return tasks
