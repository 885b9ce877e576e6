"""The two ways training ends early: the researcher's problem, or a requested stop."""


class TrainingError(RuntimeError):
    """Training went wrong in a way the researcher must fix (NaN loss, ...); one-line message."""


class Interrupted(Exception):
    """Raised after a checkpoint was written because the job was asked to stop (SLURM USR2, SIGTERM)."""
