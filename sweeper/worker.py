"""Kept for pickles only: the task function of a job submitted before the package split runs
`from .worker import run_point, summary_line` when its requeued attempt starts."""

from .summary import summary_line
from .train import run_point

__all__ = ["run_point", "summary_line"]
