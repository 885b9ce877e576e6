"""`sweeper.trackers=[tensorboard]`: event files in each run folder (<run_dir>/tensorboard).

Scalars by optimizer step: train/loss, train/lr, eval/validation_score (train.eval_every), method
events (method/merge/...). At the end, `add_hparams` with the point's identity and method settings
and its final validation/test metrics, so TensorBoard's HParams dashboard compares the points of
`tensorboard --logdir results/<name>`. A resumed point purges the events past its checkpoint, as
metrics.jsonl drops its lines past it. TensorBoard slows past a few hundred runs: docs/tracking.md.
"""

from __future__ import annotations

from typing import Any

from .base import Tracker, final_metrics, flat, identity, step_scalars
from .registry import register

FOLDER = "tensorboard"
HPARAM_TYPES = (bool, int, float, str)


def hparams(record: dict[str, Any]) -> dict[str, Any]:
    """The point's identity (dataset, model, method, r, lr, seed, ...) and its method.* settings."""
    method = (record.get("config") or {}).get("method") or {}
    settings = {f"method.{k}": v for k, v in flat("", method) if k != "name"}
    values = {**identity(record), **settings}
    return {k: (v if isinstance(v, HPARAM_TYPES) else str(v)) for k, v in values.items()}


@register
class TensorBoard(Tracker):
    name = "tensorboard"

    def __init__(self, point):
        super().__init__(point)
        self.writer = None

    def start(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events of an earlier attempt after the checkpoint this one resumes from are
        # dropped (all of them when it starts afresh: a retried failure).
        self.writer = SummaryWriter(log_dir=str(self.point.run_dir / FOLDER), purge_step=step + 1)

    def log(self, line: dict[str, Any]) -> None:
        for tag, value in step_scalars(line):
            self.writer.add_scalar(tag, value, int(line["step"]))

    def flush(self) -> None:
        self.writer.flush()

    def finish(self, record: dict[str, Any]) -> None:
        metrics = final_metrics(record)
        if str(record.get("status")) != "ok" or not metrics:
            return  # a failed point has no final metrics to compare
        if self.writer is None:  # a method without a training loop (tfidf)
            self.start(0)
        # run_name=".": the hparams go into this run's own folder, not a timestamped sub-run.
        self.writer.add_hparams(hparams(record), metrics, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
