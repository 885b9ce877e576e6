"""The ways a point ends early: a model that cannot be built, the researcher's problem, or a requested stop."""


class TrainingError(RuntimeError):
    """Training went wrong in a way the researcher must fix (NaN loss, ...); one-line message."""


class Interrupted(Exception):
    """Raised after a checkpoint was written because the job was asked to stop (SLURM USR2, SIGTERM)."""


class ModelError(ValueError):
    """A model that cannot be built (or cannot do the point's task); the message is one line naming the model."""
