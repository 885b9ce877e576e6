"""Jobs that end without a record (issue 13): a lost record is created only where no record
exists, never for a job that returned ok (its record may not be visible yet on NFS), and a lost
point re-runs on relaunch."""

from __future__ import annotations

from sweeper.launch.planner import Point, plan, write_lost_record
from sweeper.records import read_existing, record_signature, write_record
from sweeper.runs import Decision, decide


def planned_point(make_cfg, *overrides) -> Point:
    from sweeper.launch.grid import PointConfig
    from sweeper.runs import resolved

    config = resolved(make_cfg("model=tiny_llama", *overrides))
    return plan([(0, ["model=tiny_llama"], PointConfig(config, {}))], retry_failed=False)[0]


def test_a_lost_record_never_replaces_one_that_appeared(make_cfg):
    point = planned_point(make_cfg)
    assert point.prior is None
    # The job's ok record lands after planning (on NFS: on the server, maybe not visible here yet).
    write_record(point.run_dir, {"run_id": point.run_id, "status": "ok"})
    assert not write_lost_record(point, "job 1 CANCELLED")
    assert read_existing(point.run_dir)["status"] == "ok"


class EndedJob:
    """A job the scheduler says ended, with the outcome its result file holds (submitit's Job API)."""

    job_id = "7_0"

    def __init__(self, tmp_path, outcome):
        self.outcome = outcome
        result = tmp_path / "7_0_result.pkl"
        result.write_bytes(b"")
        self.paths = type("Paths", (), {"result_pickle": result})()

    def result(self):
        return [self.outcome]


def ended_backend():
    """A backend whose every job has ended (its result as submitit's file holds it)."""
    from sweeper.launch.backends.base import submitit_result

    methods = {"ended": lambda self, job: True, "result": lambda self, job: submitit_result(job)}
    return type("Backend", (), {**methods, "lost_reason": lambda self, job: "gone", "result_grace_s": 10.0})()


def test_a_record_that_shows_late_is_never_overwritten_by_the_monitor(make_cfg, tmp_path, capsys):
    """The job returned ok, its record is not visible yet (NFS): the monitor reports it from the
    job's outcome and writes no lost record; the record then appears, intact."""
    from sweeper.launch.monitor import Monitor, Running

    point = planned_point(make_cfg)
    backend = ended_backend()
    monitor = Monitor(total=1, backend=backend)
    assert monitor.settle(Running(EndedJob(tmp_path, {"idx": point.idx, "status": "ok"}), [point]))
    assert read_existing(point.run_dir) is None, "a lost record was written for a job that returned ok"
    assert monitor.ok == 1 and not monitor.failed
    assert "(record not visible yet)" in capsys.readouterr().out
    write_record(point.run_dir, {"run_id": point.run_id, "status": "ok"})  # visible at last
    assert read_existing(point.run_dir)["status"] == "ok"


def test_a_job_that_died_gets_one_lost_record(make_cfg, tmp_path):
    from sweeper.launch.monitor import Monitor, Running

    point = planned_point(make_cfg)
    backend = ended_backend()
    monitor = Monitor(total=1, backend=backend)
    outcome = {"idx": point.idx, "status": "failed", "error": "RuntimeError: killed"}
    assert monitor.settle(Running(EndedJob(tmp_path, outcome), [point]))
    record = read_existing(point.run_dir)
    assert record["error_type"] == "JobLost" and record["error"] == "job 7_0: RuntimeError: killed"
    assert len(monitor.failed) == 1


def test_a_lost_point_reruns_on_relaunch(make_cfg):
    point = planned_point(make_cfg)
    assert write_lost_record(point, "job 7 CANCELLED by 0")
    record = read_existing(point.run_dir)
    assert record["error_type"] == "JobLost" and record["status"] == "failed"
    assert decide(point.run_dir, retry_failed=False)[0] == Decision.RERUN_LOST
    again = planned_point(make_cfg)
    assert again.runs and again.decision == Decision.RERUN_LOST and again.prior == record_signature(point.run_dir)
    assert not write_lost_record(again, "job 8 CANCELLED"), "a record exists: it is not replaced"
