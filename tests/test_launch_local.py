"""hydra/launcher=local: the plugin is found, each worker gets its own slot (GPU or CPU-thread share),
and no more than `workers` jobs run at once."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.config import compose
from sweeper.launch.backends.local import local_slots, visible_gpus
from sweeper.ledger import read_sweep
from sweeper.records import find_records, read_record
from tests.waiting import max_overlap

REPO = Path(__file__).resolve().parents[1]
LSTM = ["model=lstm", "train.max_steps=5", "train.eval_size=50"]


def run_sweep(tmp_path, *overrides, timeout=400):
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        *LSTM,
        f"sweeper.results_dir={tmp_path / 'results'}",
        f"hydra.sweep.dir={tmp_path / 'jobs'}",
        "hydra.launcher.poll_s=0.5",
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_plugin_is_discovered_from_the_installed_package(tmp_path):
    # From outside the repository: only the editable install can make hydra_plugins importable here.
    code = (
        "from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher;"
        "print(' '.join(c.__module__ + '.' + c.__name__ for c in Plugins.instance().discover(Launcher)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "hydra_plugins.sweeper_launcher.launcher.SweeperLauncher" in proc.stdout.split()
    assert "hydra._internal.core_plugins.basic_launcher.BasicLauncher" in proc.stdout.split()


@pytest.mark.parametrize("name", ["local", "slurm", "ray"])
def test_launcher_configs_compose(name):
    cfg = compose(f"hydra/launcher={name}", hydra=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.sweeper_launcher.launcher.SweeperLauncher"
    assert cfg.hydra.launcher.kind == name


def test_slots_one_gpu_each_or_a_share_of_the_cores(monkeypatch):
    slots = local_slots(workers=None, gpus=[0, 1], threads=None)
    assert [s.gpus for s in slots] == [(0,), (1,)]  # one job per GPU by default
    assert [s.gpus for s in local_slots(workers=3, gpus=[4, 6], threads=2)] == [(4,), (6,), (4,)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus("auto") == [3, 5]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus("auto") == []
    cores = len(os.sched_getaffinity(0))
    cpu = local_slots(workers=2, gpus=[], threads=None)
    assert [s.gpus for s in cpu] == [(), ()]
    assert all(s.threads == max(1, cores // 2) for s in cpu)


def test_two_workers_get_distinct_slots_and_the_cap_holds(tmp_path):
    # gpus=[0,1] on a CPU machine still shows the assignment: CUDA_VISIBLE_DEVICES=<slot's gpu> per job.
    proc = run_sweep(
        tmp_path,
        "dataset=fortune_computers_vs_rest,fortune_art_vs_rest,fortune_law_vs_rest",
        "method.r=2",
        "hydra/launcher=local",
        "hydra.launcher.workers=2",
        "hydra.launcher.gpus=[0,1]",
        "hydra.launcher.threads=1",
    )
    assert "local queue: 2 worker(s) [gpu 0, gpu 1]" in proc.stdout
    records = [read_record(p) for p in find_records(tmp_path / "results")]
    assert len(records) == 3 and all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    workers = [r["worker"] for r in records]
    assert {w["slot"] for w in workers} == {"0", "1"}
    assert all(w["cuda_visible_devices"] == w["slot"] for w in workers)  # slot k -> gpu k here
    assert all(w["threads"] == 1 for w in workers)
    assert len({w["job_id"] for w in workers}) == 3  # chunk=1: one process per point
    intervals = [(w["started_unix"], w["started_unix"] + r["wall_seconds"]) for w, r in zip(workers, records)]
    assert max_overlap(intervals) <= 2
    sweep = read_sweep(tmp_path / "results")  # sweep.json, with each launch's jobs from jobs.jsonl
    assert sweep["launches"][0]["counts"]["to_run"] == 3 and len(sweep["launches"][0]["jobs"]) == 3


# ---------------------------------------------------------------- the SLURM backend, without a cluster
def slurm_backend(tmp_path, **params):
    """The backend as the plugin builds it: conf/hydra/launcher/slurm.yaml, then `params` on top."""
    from omegaconf import OmegaConf

    from sweeper.launch.backends.slurm import SlurmArrays

    launcher = OmegaConf.to_container(compose("hydra/launcher=slurm", hydra=True).hydra.launcher, resolve=True)
    defaults = {k: v for k, v in launcher.items() if k not in ("_target_", "kind")}
    overrides = {"timeout_min": 30, "max_array_size": 4, **params}
    return SlurmArrays(tmp_path / "%j", OmegaConf.create({**defaults, **overrides}))


def test_slurm_options_reach_the_sbatch_script(tmp_path):
    backend = slurm_backend(
        tmp_path,
        partition="gpu",
        cpus_per_task=4,
        gpus_per_task=1,
        mem_gb=8,
        qos="high",
        account="lab",
        constraint="a100",
        array_parallelism=3,
        signal_delay_s=120,
        additional_parameters={"mail-type": "END"},
        setup=["module load cuda"],
    )
    script = backend.executor._make_submission_file_text("CMD", "uid")
    for line in [
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --mem=8GB",
        "#SBATCH --qos=high",
        "#SBATCH --account=lab",
        "#SBATCH --constraint=a100",
        "#SBATCH --time=30",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --mail-type=END",
        "module load cuda",
        "export SWEEPER_THREADS=4 OMP_NUM_THREADS=4",
    ]:
        assert line in script, line


def test_array_parallelism_caps_the_whole_sweep_across_arrays(tmp_path, monkeypatch):
    """5 arrays under a cap of 3: three lanes (%1 each); an array waits for its lane's previous one."""

    class Job:
        def __init__(self, array):
            self.job_id = f"{array}_0"

    backend = slurm_backend(tmp_path, array_parallelism=3)
    backend.prepare(nproc=1, jobs=18)  # 18 jobs / 4 per array = 5 arrays (+ an early one): 3 lanes
    sbatch = []

    def submit_array(fns):
        p = backend.executor.parameters
        sbatch.append((len(fns), p.get("array_parallelism"), p.get("dependency")))
        return [Job(100 + len(sbatch))]

    monkeypatch.setattr(backend.executor, "submit_array", submit_array)
    for n in (4, 4, 4, 4, 2):
        backend.submit(list(range(n)))
    assert sbatch == [
        (4, 1, None),
        (4, 1, None),
        (4, 1, None),
        (4, 1, "afterany:101"),
        (2, 1, "afterany:102"),
    ]
    assert backend.array_ids == ["101", "102", "103", "104", "105"]


def test_array_parallelism_is_shared_out_again_over_the_lanes_in_use(tmp_path, monkeypatch):
    """Planned for 3 arrays (2 + an early one) under a cap of 10; only 2 were needed: once the last
    is submitted, each gets 5 (scontrol update ArrayTaskThrottle)."""
    from sweeper.launch.backends import slurm

    class Job:
        def __init__(self, array):
            self.job_id = f"{array}_0"

    backend = slurm_backend(tmp_path, array_parallelism=10)
    backend.prepare(nproc=1, jobs=6)
    assert backend.shares == [4, 3, 3]
    monkeypatch.setattr(backend.executor, "submit_array", lambda fns: [Job(200 + len(backend.array_ids))])
    calls = []
    monkeypatch.setattr(slurm.shell, "output", lambda cmd, timeout=None: calls.append(cmd) or "")
    backend.submit([0, 1, 2, 3])
    backend.submit([4, 5])
    backend.finish()
    assert calls == [
        ["scontrol", "update", "JobId=200", "ArrayTaskThrottle=5"],
        ["scontrol", "update", "JobId=201", "ArrayTaskThrottle=5"],
    ]
    assert backend.shares == [5, 5]


def test_chunk_auto_fits_one_array_and_bounds_job_time(monkeypatch):
    from omegaconf import OmegaConf

    from sweeper.launch.backends import local, slurm

    monkeypatch.setattr(slurm, "submit_limit", lambda: None)
    params = OmegaConf.create({"max_array_size": 1001, "timeout_min": 60})
    assert slurm.SlurmArrays.auto_chunk(params, 100, None) == 1
    assert slurm.SlurmArrays.auto_chunk(params, 10_000, None) == 10  # 1,000 jobs: one array
    assert slurm.SlurmArrays.auto_chunk(params, 100, 30.0) == 20  # 10 minutes of work per job
    assert slurm.SlurmArrays.auto_chunk(params, 100, 600.0) == 1  # a point is work enough
    assert slurm.SlurmArrays.auto_chunk(params, 10_000, 600.0) == 3  # at most half the hour: 4 arrays
    monkeypatch.setattr(slurm, "submit_limit", lambda: 50)
    assert slurm.SlurmArrays.auto_chunk(params, 1_000, None) == 20  # the submit limit
    assert local.LocalQueue.auto_chunk(params, 1_000, None) == 1
    assert local.LocalQueue.auto_chunk(params, 1_000, 2.0) == 30  # a minute of work per process


def test_max_array_size_comes_from_scontrol(monkeypatch):
    from sweeper import shell
    from sweeper.launch.backends import slurm

    fake = subprocess.CompletedProcess([], 0, stdout="KillWait = 5 sec\nMaxArraySize            = 1001\n")
    monkeypatch.setattr(shell.subprocess, "run", lambda *a, **k: fake)
    assert slurm.max_array_size() == 1001
    assert slurm.max_array_size(50) == 50


def test_pack_trains_points_of_one_job_on_one_base(tmp_path):
    """sweeper.pack=3 on the local queue: three datasets, one job, one pack, one record each."""
    proc = run_sweep(
        tmp_path,
        "hydra/launcher=local",
        "hydra.launcher.workers=1",
        "model=tiny_llama",
        "dataset=fortune_computers_vs_rest,fortune_cookie_vs_rest,fortune_art_vs_rest",
        "method.r=2",
        "train.max_steps=3",
        "train.eval_size=32",
        "sweeper.pack=3",
    )
    records = [read_record(p) for p in find_records(tmp_path / "results")]
    assert sorted(r["status"] for r in records) == ["ok"] * 3, proc.stdout[-2000:]
    assert {r["pack"]["size"] for r in records} == {3}
    assert len({r["worker"]["pid"] for r in records}) == 1, "a pack trains in one process"
