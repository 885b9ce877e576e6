"""hydra/launcher=slurm on the live local cluster (`make slurm-up`): one job array per sweep, preemption
resumes from the checkpoint, a cancelled task is reported failed in bounded time.

Without a cluster these tests skip, except under CI (env CI set), where they fail."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.ledger import read_sweep
from sweeper.records import find_records, read_record
from tests.waiting import wait_for

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
    from sweeper.launch.backends.slurm import unaccounted_reason

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

        assert (
            unaccounted_reason(f"{array}_1")
            == f"job {array}_1 CANCELLED before it started (removed from the pending array)"
        )
    finally:
        subprocess.run(["scancel", array], timeout=30)


FIVE = "dataset=fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest,fortune_food_vs_rest,fortune_drugs_vs_rest"


def test_arrays_split_at_max_array_size_run_under_one_sweep_wide_cap(tmp_path):
    """5 points, 2 tasks per array, at most 2 tasks of the sweep at once: arrays 1 and 2 run, array 3
    waits for array 1 (lanes); every array completes and every point is recorded once."""
    from sweeper.launch.backends.slurm import max_array_size

    assert max_array_size() == 1001  # the cluster's own (scripts/slurm-local.sh), read from scontrol
    cmd = sweep_cmd(tmp_path, FIVE, "method.r=2", "train.max_steps=5", "hydra.launcher.max_array_size=2")
    proc = subprocess.run(
        [*cmd, "hydra.launcher.array_parallelism=2"], capture_output=True, text=True, timeout=420, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = records(tmp_path)
    assert len(recs) == 5 and all(r["status"] == "ok" for r in recs.values()), [r.get("error") for r in recs.values()]
    jobs = jobs_of(tmp_path)  # dataset -> task id
    arrays = sorted({j.split("_")[0] for j in jobs.values()}, key=int)
    assert len(arrays) == 3 and "3 array(s)" in proc.stdout
    in_array = {a: [d for d, j in jobs.items() if j.split("_")[0] == a] for a in arrays}
    assert [len(in_array[a]) for a in arrays] == [2, 2, 1]
    first_done = max(recs[d]["finished_at"] for d in in_array[arrays[0]])
    assert all(recs[d]["started_at"] >= first_done for d in in_array[arrays[2]]), "array 3 ran beside array 1"


def test_a_refused_sbatch_is_one_line_and_the_submitted_array_is_watched(tmp_path):
    """sbatch refuses the second array (a QOS submit limit, made here by a wrapper on PATH): the
    first array is still watched to its record, the rest is left for a relaunch, which submits it."""
    import shutil

    real = shutil.which("sbatch")
    wrapper = tmp_path / "bin" / "sbatch"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{tmp_path}/calls" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{tmp_path}/calls"\n'
        'if [ "$n" -ge 2 ]; then\n'
        "  echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2\n"
        "  echo 'sbatch: error: Batch job submission failed: Job violates accounting/QOS policy' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {real} "$@"\n'
    )
    wrapper.chmod(0o755)
    cmd = sweep_cmd(tmp_path, THREE, "method.r=2", "train.max_steps=5", "hydra.launcher.max_array_size=1")
    env = {**os.environ, "PATH": f"{wrapper.parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=REPO, env=env)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "sbatch" in line]
    assert errors[0] == (
        "error: sbatch refused array 2 (1 point(s)): "
        "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy"
    ), proc.stderr[-2000:]
    assert "2 point(s) not submitted" in proc.stderr and "Traceback" not in proc.stderr
    assert len(errors) == 2  # the refusal, then what was left unsubmitted
    recs = records(tmp_path)
    assert [r["status"] for r in recs.values()] == ["ok"], "the submitted array was not watched to its record"
    assert len(jobs_of(tmp_path)) == 1  # the ledger holds what was submitted, and only that
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=420, cwd=REPO)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "skipping 1 already ok" in again.stdout
    assert sorted(r["status"] for r in records(tmp_path).values()) == ["ok"] * 3


def test_a_relaunch_during_a_detached_sweep_trains_each_point_once(tmp_path):
    """Both launches submit all three points (no record exists yet when the second plans); the run
    folder's lock lets exactly one task train each, the other finds it busy or already done."""
    cmd = sweep_cmd(tmp_path, THREE, "method.r=2", "train.max_steps=300", "train.log_every=1", "sweeper.detach=true")
    for _ in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    launches = read_sweep(tmp_path / "results")["launches"]
    assert [launch["counts"]["to_run"] for launch in launches] == [3, 3]
    arrays = {job["job_id"].split("_")[0] for launch in launches for job in launch["jobs"]}
    assert len(arrays) == 2

    def all_left_the_queue():
        out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=30)
        return out.returncode == 0 and not {j.split("_")[0] for j in out.stdout.split()} & arrays

    wait_for(all_left_the_queue, 400, "both launches' arrays to finish")
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        assert read_record(run / "record.json")["status"] == "ok"
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(set(steps)) and steps[-1] == 300, f"{run.name} trained twice: {steps[:20]}"


def test_a_point_of_two_ranks_runs_as_two_srun_tasks(tmp_path):
    # Two points in one job: task 1 follows task 0 through both (sweeper.train.distributed).
    proc = subprocess.run(
        sweep_cmd(
            tmp_path,
            "dataset=fortune_art_vs_rest,fortune_law_vs_rest",
            "train.max_steps=4",
            "train.nproc=2",
            "sweeper.chunk=2",
        ),
        capture_output=True,
        text=True,
        timeout=420,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    recs = list(records(tmp_path).values())
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    assert all(r["worker"]["world_size"] == 2 and r["worker"]["backend"] == "gloo" for r in recs)
    job = recs[0]["worker"]["job_id"]
    assert {r["worker"]["job_id"] for r in recs} == {job}

    def srun_step():  # the job's srun step, with its task count (accounting lags a few seconds)
        out = subprocess.run(
            ["sacct", "-n", "-P", "-o", "JobID,NTasks,State", "-j", job], capture_output=True, text=True, timeout=30
        ).stdout
        steps = [line.split("|") for line in out.split() if line.split("|")[0].endswith(".0")]
        return steps if steps and steps[0][2] == "COMPLETED" else None

    assert wait_for(srun_step, 60, f"sacct to show job {job}'s srun step")[0][1] == "2"
