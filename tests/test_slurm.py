"""hydra/launcher=slurm on the live local cluster (`make slurm-up`): one job array per sweep, preemption
resumes from the checkpoint, a cancelled task is reported failed in bounded time.

Without a cluster these tests skip, except under CI (env CI set), where they fail."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.ledger import read_sweep
from sweeper.records import find_records, read_record

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
LSTM = ["model=lstm", "train.eval_size=50"]
THREE = "dataset=fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest"


def _cluster_problem() -> str | None:
    try:
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo does not answer ({error}); start a cluster with `make slurm-up`"
    states = sinfo.stdout.split()
    if sinfo.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"no usable SLURM node (sinfo rc={sinfo.returncode}: {sinfo.stdout.strip() or sinfo.stderr.strip()})"
    sacct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=20)
    if sacct.returncode != 0:
        return f"SLURM accounting is off (sacct: {sacct.stderr.strip()}); the launcher needs it to see dead jobs"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"CI needs the SLURM cluster: {problem}")
    if problem:
        pytest.skip(problem)


def sweep_cmd(root: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.poll_s=0.5",
        "hydra.launcher.timeout_min=30",
        *LSTM,
        f"sweeper.results_dir={root / 'results'}",
        f"hydra.sweep.dir={root / 'jobs'}",
        *overrides,
    ]


def records(root: Path) -> dict[str, dict]:
    return {r["dataset"]: r for r in (read_record(p) for p in find_records(root / "results"))}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def jobs_of(root: Path) -> dict[str, str]:
    """dataset-named run id prefix -> SLURM job id, from the sweep's ledger (sweep.json + jobs.jsonl)."""
    launches = read_sweep(root / "results")["launches"]
    if not launches:
        return {}
    launch = launches[-1]
    return {rid.split("-")[0]: job["job_id"] for job in launch["jobs"] for rid in job["run_ids"]}


def test_grid_is_one_job_array_and_collects(tmp_path):
    proc = subprocess.run(
        sweep_cmd(tmp_path, THREE, "method.r=2,4", "train.max_steps=5", "sweeper.chunk=2"),
        capture_output=True,
        text=True,
        timeout=420,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = [read_record(p) for p in find_records(tmp_path / "results")]
    assert len(recs) == 6 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    launch = read_sweep(tmp_path / "results")["launches"][-1]
    job_ids = [j["job_id"] for j in launch["jobs"]]
    arrays = {j.split("_")[0] for j in job_ids}
    assert len(arrays) == 1 and sorted(int(j.split("_")[1]) for j in job_ids) == list(range(3))  # 2 points per task
    array = arrays.pop()

    def sacct_rows():  # a task writes its result, then exits: accounting lags by a few seconds
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", array], capture_output=True, text=True, timeout=30
        ).stdout
        rows = dict(line.split("|") for line in out.split())
        return rows if set(rows.values()) == {"COMPLETED"} else None

    rows = wait_for(sacct_rows, 60, f"sacct to show array {array} completed")
    assert sorted(rows) == sorted(f"{array}_{k}" for k in range(3))
    collect = subprocess.run(
        [sys.executable, "-m", "sweeper.collect", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert collect.returncode == 0, collect.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert len(table) == 6 and set(table["status"]) == {"ok"}


@pytest.fixture(scope="module")
def disrupted(tmp_path_factory):
    """A 2-task array: task 1 is cancelled (scancel) at once, task 0 is preempted (USR2) mid-training."""
    root = tmp_path_factory.mktemp("disrupted")
    log = open(root / "launcher.log", "w")
    launcher = subprocess.Popen(
        sweep_cmd(root, "dataset=fortune_computers_vs_rest,fortune_art_vs_rest", "method.r=2", "train.max_steps=300"),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        jobs = wait_for(lambda: len(jobs_of(root)) == 2 and jobs_of(root), 120, "the array's submission")
        runs = root / "results" / "runs"

        def training(dataset):  # a few steps logged: the job's signal handlers are in place
            files = list(runs.glob(f"{dataset}-*/metrics.jsonl"))
            return files and len(files[0].read_text().splitlines()) >= 2

        # Task 1 is cancelled as soon as it is submitted: on a quiet machine it could otherwise
        # finish its few hundred LSTM steps before the test gets to it.
        cancelled_at = time.time()
        subprocess.run(["scancel", jobs["fortune_art_vs_rest"]], check=True, timeout=30)
        wait_for(lambda: training("fortune_computers_vs_rest"), 240, "task 0 to train")
        subprocess.run(["scancel", "--signal=USR2", jobs["fortune_computers_vs_rest"]], check=True, timeout=30)
        lost = wait_for(lambda: records(root).get("fortune_art_vs_rest"), 120, "the cancelled task's record")
        reported_s = time.time() - cancelled_at
        launcher.wait(timeout=420)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            subprocess.run(["scancel", *jobs_of(root).values()], timeout=30)
    output = (root / "launcher.log").read_text()
    assert launcher.returncode == 0, output[-3000:]
    return root, records(root), lost, reported_s, output


def test_preempted_task_resumes_from_its_checkpoint_with_equal_metrics(disrupted, make_cfg):
    from sweeper.train import run_point

    root, recs, _, _, output = disrupted
    resumed = recs["fortune_computers_vs_rest"]
    assert resumed["status"] == "ok", resumed.get("error")
    assert 0 < resumed["train"]["resumed_from_step"] < 300, output[-2000:]
    assert resumed["train"]["steps"] == 300
    straight = run_point(make_cfg(*LSTM, "dataset=fortune_computers_vs_rest", "method.r=2", "train.max_steps=300"))
    assert straight["status"] == "ok" and straight["train"]["resumed_from_step"] == 0
    assert resumed["metrics"] == straight["metrics"]


def test_cancelled_task_is_reported_failed_in_bounded_time(disrupted):
    root, recs, lost, reported_s, output = disrupted
    assert lost["status"] == "failed" and lost["error_type"] == "JobLost"
    job = jobs_of(root)["fortune_art_vs_rest"]
    assert lost["error"].startswith(f"job {job} CANCELLED"), lost["error"]
    assert reported_s < 90
    assert f"[FAILED] fortune_art_vs_rest lstm lora r=2: job {job} CANCELLED" in output
    assert recs["fortune_computers_vs_rest"]["status"] == "ok"  # the other task's record is intact


def test_pending_array_task_cancelled_alone_is_named_cancelled():
    """SLURM keeps no record of a pending array task cancelled on its own: not in squeue, scontrol
    or sacct. The launcher must still say what happened, not 'state unknown'."""
    from sweeper.launch.backends import SlurmArrays

    array = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--array=0-1",
            "--begin=now+1hour",
            "-o",
            "/dev/null",
            "-J",
            "sweeper-test-pending",
            "--wrap",
            "true",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    try:
        subprocess.run(["scancel", f"{array}_1"], check=True, timeout=30)

        class Lost:  # what submitit knows of such a task: nothing
            job_id, state = f"{array}_1", "UNKNOWN"

            def get_info(self, mode):
                return {}

        assert (
            SlurmArrays.lost_reason(None, Lost())
            == f"job {array}_1 CANCELLED before it started (removed from the pending array)"
        )
    finally:
        subprocess.run(["scancel", array], timeout=30)
