"""hydra/launcher=ray against a real Ray head that the tests start and stop, confined to loopback:
Ray binds to the machine's outward interface and reports usage statistics by default, so every Ray
process here lives in a network namespace of its own (`unshare -n`, `lo` up: Ray binds 127.0.0.1)
with RAY_USAGE_STATS_ENABLED=0."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeper.ledger import read_sweep
from sweeper.records import find_records, read_record
from tests.waiting import max_overlap, wait_for

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
POINTS = ["model=lstm", "train.eval_size=50", "method.r=2"]
THREE = "dataset=fortune_art_vs_rest,fortune_law_vs_rest,fortune_love_vs_rest"
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore"}


class Namespace:
    """A network namespace with only loopback, held open by a sleeping process; `run` enters it."""

    def __init__(self):
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        time.sleep(0.3)
        self.run(["ip", "link", "set", "lo", "up"], check=True)

    def command(self, cmd: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-n", *cmd]

    def run(self, cmd: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        env = {**os.environ, **QUIET, **kwargs.pop("env", {})}
        kwargs.setdefault("capture_output", True)
        return subprocess.run(self.command(cmd), text=True, timeout=timeout, cwd=REPO, env=env, **kwargs)

    def popen(self, cmd: list[str], **kwargs) -> subprocess.Popen:
        env = {**os.environ, **QUIET}
        return subprocess.Popen(self.command(cmd), text=True, cwd=REPO, env=env, **kwargs)

    def close(self) -> None:
        """Stop every process in the namespace (not `ray stop --force`: it kills any process whose
        command line names one of Ray's scripts, e.g. a `pytest tests/test_monitor.py`)."""
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in in_namespace(mine):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        self.holder.wait()


def in_namespace(netns: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "ns" / "net") == netns:
                pids.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return pids


def namespaces_work() -> None:
    """Skip (off CI: stated) or fail (CI, which runs as root) where no network namespace can be made."""
    probe = (
        subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True) if shutil.which("unshare") else None
    )
    if probe is None or probe.returncode != 0 or not shutil.which("nsenter"):
        reason = "the Ray tests need `unshare -n` and nsenter (root, util-linux)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node Ray cluster on 127.0.0.1:6379 inside its own namespace: 2 CPUs and one GPU (a
    logical one: Ray schedules by declared resources; the points still train on the CPU)."""
    namespaces_work()
    temp = tmp_path_factory.mktemp("ray")
    ns = Namespace()
    start = [RAY, "start", "--head", "--num-cpus=2", "--num-gpus=1", "--include-dashboard=false"]
    start.append("--disable-usage-stats")
    started = ns.run([*start, f"--temp-dir={temp}"], timeout=120)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    yield ns
    ns.close()


def sweep(ns: Namespace, tmp_path: Path, *overrides: str, name: str = "results") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sweeper", "-m", *POINTS, "hydra/launcher=ray", "hydra.launcher.poll_s=0.5"]
    cmd += [f"sweeper.results_dir={tmp_path / name}", f"hydra.sweep.dir={tmp_path / 'jobs'}", *overrides]
    return ns.run(cmd)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def records(folder: Path) -> list[dict]:
    return [read_record(p) for p in find_records(folder)]


def test_a_grid_runs_on_ray_and_a_relaunch_trains_nothing(head, tmp_path):
    first = ok(sweep(head, tmp_path, THREE, "train.max_steps=5", "hydra.launcher.max_running=2"))
    assert "ray: cluster at 127.0.0.1:6379, 1 CPU / 0 GPU per task, at most 2 running" in first.stdout
    found = records(tmp_path / "results")
    assert len(found) == 3 and all(r["status"] == "ok" for r in found), [r.get("error") for r in found]
    jobs = {r["worker"]["job_id"] for r in found}
    assert len(jobs) == 3 and all(len(j) == 48 for j in jobs)  # Ray task ids, one task per point
    assert all(r["worker"]["threads"] == 1 for r in found)  # num_cpus=1: one torch thread
    logs = {p.stem for p in (tmp_path / "jobs" / ".ray").glob("*.log")}
    assert logs == jobs  # each task's output in its own file
    stamps = {p: Path(p).stat().st_mtime_ns for p in find_records(tmp_path / "results")}

    again = ok(sweep(head, tmp_path, THREE, "train.max_steps=5", "hydra.launcher.max_running=2"))
    assert "skipping 3 already ok, nothing to run" in again.stdout and "[1/" not in again.stdout
    assert {p: Path(p).stat().st_mtime_ns for p in stamps} == stamps
    launches = read_sweep(tmp_path / "results")["launches"]
    assert [launch["launcher"] for launch in launches] == ["ray", "ray"] and launches[1]["jobs"] == []


def test_fractional_gpus_let_two_points_share_one_gpu(head, tmp_path):
    both = "dataset=fortune_art_vs_rest,fortune_law_vs_rest"
    proc = ok(sweep(head, tmp_path, both, "train.max_steps=300", "train.device=cpu", "hydra.launcher.num_gpus=0.5"))
    assert "1 CPU / 0.5 GPU per task, at most 2 running" in proc.stdout  # the cluster's 1 GPU holds two
    found = records(tmp_path / "results")
    assert [r["status"] for r in found] == ["ok", "ok"], [r.get("error") for r in found]
    assert [r["worker"]["cuda_visible_devices"] for r in found] == ["0", "0"]  # Ray gave both the one GPU
    intervals = [(r["worker"]["started_unix"], r["worker"]["started_unix"] + r["wall_seconds"]) for r in found]
    assert max_overlap(intervals) == 2  # at the same time


def test_a_point_of_two_ranks_runs_in_one_task_of_two_cpus(head, tmp_path):
    proc = ok(sweep(head, tmp_path, "dataset=fortune_art_vs_rest", "train.max_steps=3", "train.nproc=2"))
    assert "at most 1 running" in proc.stdout  # 2 CPUs per task on a node of 2
    [found] = records(tmp_path / "results")
    assert found["status"] == "ok" and found["worker"]["world_size"] == 2, found.get("error")


def test_a_killed_worker_becomes_a_lost_record_and_a_relaunch_finishes_it(head, tmp_path):
    args = ["dataset=fortune_art_vs_rest,fortune_law_vs_rest", "train.max_steps=400"]
    launch = head.popen(
        [sys.executable, "-m", "sweeper", "-m", *POINTS, *args, "hydra/launcher=ray", "hydra.launcher.poll_s=0.5",
         f"sweeper.results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'jobs'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    marker = wait_for(lambda: next((tmp_path / "results" / "runs").glob("*/job.json"), None), 120, "a point to start")
    victim = json.loads(marker.read_text())
    os.kill(int(victim["pid"]), signal.SIGKILL)  # the task's worker process, mid-training
    out, err = launch.communicate(timeout=300)
    assert launch.returncode == 0, out[-2000:] + err[-2000:]
    lost = read_record(marker.parent / "record.json")
    assert lost["status"] == "failed" and lost["error_type"] == "JobLost"
    assert f"job {victim['job_id']} (Ray task) lost its worker process" in lost["error"]
    assert "1 ok, 1 failed" in out

    again = ok(sweep(head, tmp_path, *args))
    assert "1 re-run after their job died" in again.stdout
    found = records(tmp_path / "results")
    assert [r["status"] for r in found] == ["ok", "ok"], [r.get("error") for r in found]


def test_ctrl_c_cancels_the_tasks_and_the_same_command_finishes_the_grid(head, tmp_path):
    args = ["dataset=fortune_art_vs_rest,fortune_law_vs_rest", "train.max_steps=400"]
    cmd = [sys.executable, "-m", "sweeper", "-m", *POINTS, *args, "hydra/launcher=ray", "hydra.launcher.poll_s=0.5"]
    cmd += [f"sweeper.results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'jobs'}"]
    launch = head.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # nsenter execs: this is python
    wait_for(lambda: list((tmp_path / "results" / "runs").glob("*/job.json")), 120, "a point to start")
    launch.send_signal(signal.SIGINT)
    out, err = launch.communicate(timeout=120)
    assert launch.returncode == 130, out[-2000:] + err[-2000:]
    assert "interrupted: cancelled 2 Ray task(s); run the same command again to resume" in out
    assert "Traceback" not in err
    again = ok(head.run(cmd))
    assert "2 ok, 0 failed" in again.stdout
    assert [r["status"] for r in records(tmp_path / "results")] == ["ok", "ok"]


def test_a_detached_sweep_is_followed_with_status(head, tmp_path):
    out = ok(sweep(head, tmp_path, THREE, "train.max_steps=150", "sweeper.detach=true")).stdout
    assert "detached: Ray actor sweeper-monitor-" in out and "follow with: python -m sweeper.status" in out
    seen = []

    def finished():
        status = head.run([sys.executable, "-m", "sweeper.status", str(tmp_path / "results"), "--json"], timeout=120)
        seen.append(json.loads(status.stdout))
        return seen[-1]["done"] == 3 or None

    wait_for(finished, 300, "status to count 3 done", poll=2.0)
    assert seen[-1]["last_launch"]["launcher"] == "ray" and "ray_actor" in seen[-1]["last_launch"]["monitor"]
    assert any(s["running"] for s in seen) or len(seen) == 1  # caught running, unless it was that quick
    assert seen[-1]["failed"] == 0 and seen[-1]["stalled"] == 0
    assert "sweep done: 3 ok, 0 failed" in (tmp_path / "jobs" / "monitor.log").read_text()


def test_successive_halving_runs_on_ray(head, tmp_path):
    lm = ["dataset=austen_lm", "model=tiny_llama", "train.max_length=32", "train.eval_size=8", "train.batch_size=4"]
    grid = ["train.lr=1e-2,1e-7,1e-8", "train.max_steps=6", "sweeper.search=halving", "sweeper.halving.min_steps=2"]
    done = ok(sweep(head, tmp_path, *lm, *grid))
    assert "halving rung 1: 1 point(s) to step 6" in done.stdout
    found = {r["lr"]: r for r in records(tmp_path / "results")}
    assert found[1e-2]["train"]["steps"] == 6 and found[1e-2]["train"]["resumed_from_step"] == 2
    assert all(found[lr]["train"]["stopped_at_rung"] == 0 for lr in (1e-7, 1e-8))


def test_bad_ray_settings_are_one_line_and_submit_nothing(head, tmp_path):
    gpus = sweep(head, tmp_path, "dataset=fortune_art_vs_rest", "train.max_steps=5", "hydra.launcher.num_gpus=2")
    assert gpus.returncode == 2
    assert "error: a Ray task here asks for 1 CPU, 2 GPU (train.nproc=1); no node of the cluster" in gpus.stderr
    assert "Traceback" not in gpus.stderr and not list(find_records(tmp_path / "results"))
    assert not (tmp_path / "jobs" / ".ray").exists()
    nowhere = sweep(head, tmp_path, "dataset=fortune_art_vs_rest", "hydra.launcher.address=127.0.0.1:1")
    assert nowhere.returncode == 2 and "Traceback" not in nowhere.stderr
    assert "error: hydra.launcher.address=127.0.0.1:1: no Ray cluster reachable there" in nowhere.stderr


def test_a_node_removed_mid_sweep_leaves_lost_records_that_a_relaunch_finishes(tmp_path):
    """Two nodes (ray.cluster_utils.Cluster, 1 CPU each), both training; one is removed."""
    namespaces_work()
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES.format(repo=str(REPO), results=str(tmp_path / "results"), jobs=str(tmp_path / "jobs")))
    ns = Namespace()
    try:
        proc = ns.run([sys.executable, str(script)], timeout=600)
    finally:
        ns.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["first_rc"] == 0 and result["second_rc"] == 0, result
    assert any("(Ray task) lost its node" in e or "lost its worker" in e for e in result["lost"]), result
    found = records(tmp_path / "results")
    assert len(found) == 3 and all(r["status"] == "ok" for r in found), [r.get("error") for r in found]


TWO_NODES = """
import json, subprocess, sys, time
from pathlib import Path
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1}})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
args = [sys.executable, "-m", "sweeper", "-m", "model=lstm", "train.eval_size=50", "method.r=2",
        "dataset=fortune_art_vs_rest,fortune_law_vs_rest,fortune_love_vs_rest", "train.max_steps=400",
        "hydra/launcher=ray", "hydra.launcher.poll_s=0.5", "hydra.launcher.address=" + cluster.address,
        "sweeper.results_dir={results}", "hydra.sweep.dir={jobs}"]
launch = subprocess.Popen(args, cwd="{repo}", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
deadline = time.time() + 180
while len(list(Path("{results}").glob("runs/*/job.json"))) < 2 and time.time() < deadline:
    time.sleep(0.5)
cluster.remove_node(worker)  # one of the two running points loses its node
out, err = launch.communicate(timeout=400)
sys.stderr.write(out[-3000:] + err[-3000:])
lost = [json.loads(p.read_text()).get("error") or "" for p in Path("{results}").glob("runs/*/record.json")]
again = subprocess.run(args, cwd="{repo}", capture_output=True, text=True, timeout=400)
sys.stderr.write(again.stdout[-3000:] + again.stderr[-3000:])
print(json.dumps({{"first_rc": launch.returncode, "second_rc": again.returncode, "lost": lost}}))
"""
