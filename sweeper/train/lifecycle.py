"""One grid point's lifecycle, the same for a solo point (sweeper.train.point) and each member of
a pack (sweeper.train.pack):

    claimed = claim(cfg, ctx)           # skip rule, lock, mark started, trackers opened
    if not isinstance(claimed, Claim):  # the point's final record: done before, busy elsewhere,
        return claimed                  #   a config that does not resolve, an unusable folder
    try:
        ... train, evaluate ...
        return claimed.settle(status=Status.OK, **sections)   # or claimed.fail(error)
    finally:
        claimed.release()

`settle` hands the final record to the trackers (their errors become the record's `trackers`
section, never a failed point), then writes record.json (sweeper.train.record.finish_record).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import trackers
from ..files import UnsafePath
from ..ledger import mark_started
from ..records import Status, read_existing
from ..runs import RunLock, failure_fields
from .context import PointContext
from .record import busy_record, finish_record, previous_record, start_record, unusable_folder


@dataclass
class Claim:
    """A point this process holds the lock of and trains now."""

    cfg: DictConfig
    record: dict[str, Any]  # status running; the sections of the outcome are added by settle()
    run_dir: Path
    started: float
    lock: RunLock
    ctx: PointContext
    previous: dict[str, Any] | None = None  # the record before this attempt (a transient failure's count)
    sinks: trackers.Sinks = field(default_factory=trackers.Sinks)

    def settle(self, **fields: Any) -> dict[str, Any]:
        """The outcome into the record, the stamped record to the trackers, then to disk."""
        self.record.update(fields)
        return finish_record(self.record, self.run_dir, self.started, self.ctx, before_write=self._to_trackers)

    def _to_trackers(self, record: dict[str, Any]) -> None:
        if self.sinks or self.sinks.errors:
            self.sinks.finish(record)
            record["trackers"] = self.sinks.report()

    def fail(self, error: BaseException) -> dict[str, Any]:
        """A failed record with one line (a transient failure counted on: runs.failure_fields)."""
        return self.settle(**failure_fields(error, self.previous))

    def release(self) -> None:
        self.sinks.close()
        self.lock.release()


def claim(cfg: DictConfig, ctx: PointContext, started: float | None = None) -> Claim | dict[str, Any]:
    """Take the point, or return its final record without training it."""
    started = time.time() if started is None else started
    record, run_dir = start_record(cfg)
    if run_dir is None:  # a sweeper.name that would leave the results folder: printed, written nowhere
        return record
    previous = previous_record(cfg, run_dir)
    if previous is not None:  # relaunched sweep: the existing record as it is, not rewritten
        return previous
    if record["status"] != Status.RUNNING:  # a config that does not resolve: its failed record
        return finish_record(record, run_dir, started, ctx)
    lock = RunLock(run_dir)
    try:
        if not lock.acquire():
            return busy_record(record, run_dir)
    except (OSError, UnsafePath) as error:  # the folder cannot be made, or is a planted link
        return unusable_folder(record, run_dir, started, error, ctx)
    try:
        previous = previous_record(cfg, run_dir)  # the lock's last holder may have just finished it
        if previous is not None:
            lock.release()
            return previous
        claimed = Claim(cfg, record, run_dir, started, lock, ctx, previous=read_existing(run_dir))
        mark_started(run_dir, ctx.job_id)  # status: which job runs it
    except BaseException:
        lock.release()
        raise
    record["started_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    claimed.sinks = open_trackers(cfg, record, run_dir)
    return claimed


def open_trackers(cfg: DictConfig, record: dict[str, Any], run_dir: Path) -> trackers.Sinks:
    """The trackers of `sweeper.trackers` for this point (none: an empty Sinks). Never raises: a
    tracker setting that does not even resolve is the trackers' error line, not the point's."""
    try:
        names = OmegaConf.select(cfg, "sweeper.trackers", default=None)
        if not names:
            return trackers.Sinks()
        options = trackers.tracker_options(OmegaConf.select(cfg, "sweeper", default={}))
        return trackers.open_sinks(names, trackers.PointInfo(Path(run_dir), record, options))
    except Exception as error:  # noqa: BLE001  a tracker never fails a point
        return trackers.Sinks(errors={"sweeper.trackers": f"open: {trackers.error_line(error)}"})
