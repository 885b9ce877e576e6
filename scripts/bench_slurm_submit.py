"""Submitting 1,024- and 10,240-point grids to the local SLURM cluster, until every task is queued.

Side by side: bare `sbatch --array` calls for the same tasks (the floor) and
`python -m sweeper -m 'dataset=glob(*)' method.r=range(1,R+1) hydra/launcher=slurm sweeper.detach=true`
(Hydra expands the grid, the planner composes each point, hashes its run id, decides, and streams
the arrays to sbatch). Tasks are held back with --begin=now+1hour and cancelled once counted, so
nothing runs. Needs the cluster: `make slurm-up`.
Usage: python scripts/bench_slurm_submit.py [--ranks 4,40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def queued(name: str) -> int:
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True)
    return len(out.stdout.split())


def wait_queued(name: str, n: int, t0: float, proc=None, deadline_s: float = 900) -> tuple[float, float]:
    """(seconds until the first task is queued, seconds until all n are)."""
    first = None
    while True:
        count = queued(name)
        if count and first is None:
            first = time.time() - t0
        if count >= n:
            return first, time.time() - t0
        if proc is not None and proc.poll() not in (None, 0):
            raise SystemExit(f"the sweep failed: {proc.stderr.read()[-3000:]}")
        if time.time() - t0 > deadline_s:
            raise SystemExit(f"only {count}/{n} tasks of {name} queued after {deadline_s}s")
        time.sleep(0.2)


def bare_sbatch(n: int, array_size: int) -> float:
    """The floor: one `sbatch --array` per MaxArraySize tasks, nothing else."""
    t0 = time.time()
    for start in range(0, n, array_size):
        size = min(array_size, n - start)
        cmd = ["sbatch", "-Q", f"--array=0-{size - 1}", "--begin=now+1hour", "-J", "bench-bare", "-o", "/dev/null"]
        subprocess.run([*cmd, "--wrap", "true"], check=True)
    _, seconds = wait_queued("bench-bare", n, t0)
    subprocess.run(["scancel", "-n", "bench-bare"], check=True)
    return seconds


def sweeper_grid(ranks: int, tmp: Path, name: str) -> tuple[float, float, int, str]:
    """The grid every dataset x `ranks` ranks, detached; (first queued s, all queued s, points, planner line)."""
    n = len(list((REPO / "conf" / "dataset").glob("*.yaml"))) * ranks
    t0 = time.time()
    cmd = [sys.executable, "-m", "sweeper", "-m", "dataset=glob(*)", "model=lstm", f"method.r=range(1,{ranks + 1})"]
    cmd += ["hydra/launcher=slurm", "sweeper.detach=true", f"hydra.launcher.name={name}"]
    cmd += ["hydra.launcher.timeout_min=15", "+hydra.launcher.additional_parameters.begin=now+1hour"]
    cmd += [f"sweeper.results_dir={tmp / name}", f"hydra.sweep.dir={tmp / name / 'jobs'}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first, every = wait_queued(name, n, t0, proc)
    out, _ = proc.communicate(timeout=600)
    subprocess.run(["scancel", "-n", name], check=True)
    planned = next((line for line in out.splitlines() if line.startswith("planned ")), "?")
    return first, every, n, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="4,40", help="grid sizes: every dataset x R ranks, for each R")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from sweeper.launch.backends.slurm import max_array_size

    array_size = max_array_size()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in (int(r) for r in args.ranks.split(",")):
            first, every, n, planned = sweeper_grid(ranks, Path(tmp), f"bench-sweeper-{ranks}")
            bare = bare_sbatch(n, array_size)
            rows.append((n, ranks, first, every, bare, planned))
    print("## Submitting 1,024- and 10,240-point grids to SLURM\n")
    print(
        f"`python scripts/bench_slurm_submit.py --ranks {args.ranks}`: every dataset x R ranks "
        f"(`method.r=range(1,R+1)`), one array task per point, on the local single-node cluster "
        f"(`make slurm-up`, MaxArraySize {array_size}); time from the command's start until `squeue` lists "
        "the first task and every task (held with `--begin=now+1hour`, then cancelled). Bare `sbatch` "
        "submits the same number of tasks in arrays of the same size, right after, in the same run.\n"
    )
    print("| points | sweeper: first task queued (s) | sweeper: all queued (s) | bare sbatch: all queued (s) | ratio |")
    print("|---|---|---|---|---|")
    for n, _, first, every, bare, _ in rows:
        print(f"| {n:,} | {first:.1f} | {every:.1f} | {bare:.2f} | {every / bare:.0f}x |")
    print()
    for n, _, _, _, _, planned in rows:
        print(f"- {n:,} points, the launcher's own line: `{planned}`")


if __name__ == "__main__":
    main()
