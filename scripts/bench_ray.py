"""Ray vs the local queue: the same grid of tiny points through both, on the same cores, side by side.

    python scripts/bench_ray.py [--points 200] [--chunk 20] [--slots 2] [--steps 5]   (root: unshare -n)

The script re-runs itself inside a network namespace with only loopback (Ray binds to the outward
interface otherwise, see tests/test_ray.py), starts a Ray head there with `--slots` CPUs, and runs
the grid (tiny LSTM + LoRA, `--steps` steps, 50 test examples; 10 fortune datasets x seeds) twice:
`hydra/launcher=local` with `--slots` workers x 1 thread, then `hydra/launcher=ray` with 1 CPU per
task and `--slots` tasks at once; `sweeper.chunk` points per job in both. Reported per engine: sweep
wall time, the points' summed training time (record cost.train_seconds) and wall time (record
wall_seconds), wall / train, and the overhead per point: slot-seconds not spent inside a point
(process start and imports, submission, scheduling, the monitor's polling) over the points.
Prints a markdown snippet for BENCHMARKS.md.
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
sys.path.insert(0, str(REPO))

from bench_chunking import DATASETS, warm_data  # noqa: E402

from sweeper.records import find_records, read_record  # noqa: E402

INSIDE = "SWEEPER_BENCH_RAY_NETNS"
RAY = str(Path(sys.executable).parent / "ray")


def run_engine(root: Path, engine: list[str], name: str, args) -> dict:
    seeds = args.points // len(DATASETS)
    results = root / name
    cmd = [sys.executable, "-m", "sweeper", "-m", *engine, "hydra.launcher.poll_s=0.5", "model=lstm"]
    cmd += [f"dataset={','.join(DATASETS)}", f"train.seed=range(0,{seeds})", f"train.max_steps={args.steps}"]
    cmd += ["train.eval_size=50", f"sweeper.chunk={args.chunk}", f"sweeper.results_dir={results}"]
    cmd += [f"hydra.sweep.dir={root / ('jobs_' + name)}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [read_record(p) for p in find_records(results)]
    ok = [r for r in records if r["status"] == "ok"]
    point_wall = sum(r["wall_seconds"] for r in ok)
    return {
        "name": name,
        "points": len(records),
        "ok": len(ok),
        "wall": wall,
        "train": sum(r["cost"]["train_seconds"] for r in ok),
        "point_wall": point_wall,
        "overhead": (wall * args.slots - point_wall) / max(1, len(ok)),
        "load": os.getloadavg()[0],
    }


def inside(args) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    warm_data(50)  # every dataset's parquet cache built first: neither engine pays for it
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        start = [RAY, "start", "--head", f"--num-cpus={args.slots}", "--include-dashboard=false"]
        subprocess.run([*start, "--disable-usage-stats", f"--temp-dir={tmp}/ray"], check=True, capture_output=True)
        try:
            local = ["hydra/launcher=local", f"hydra.launcher.workers={args.slots}", "hydra.launcher.threads=1"]
            ray = ["hydra/launcher=ray", "hydra.launcher.num_cpus=1", f"hydra.launcher.max_running={args.slots}"]
            for name, engine in (("local", local), ("ray", ray)):
                rows.append(run_engine(Path(tmp), engine, name, args))
                print(f"{name}: {rows[-1]['ok']}/{rows[-1]['points']} ok in {rows[-1]['wall']:.1f}s", file=sys.stderr)
        finally:
            subprocess.run([RAY, "stop", "--force"], capture_output=True)
    report(rows, args)


def report(rows: list[dict], args) -> None:
    print(f"\n### Ray vs the local queue: {args.points} tiny points, {args.chunk} per job, {args.slots} at once\n")
    print(
        f"`python scripts/bench_ray.py` (root; it runs itself in `unshare -n`): tiny LSTM + LoRA, {args.steps} steps, "
        f"50 test examples; local queue {args.slots} workers x 1 thread vs a one-node Ray head with "
        f"{args.slots} CPUs, 1 CPU per task, max_running={args.slots}; {os.cpu_count()} cores.\n"
    )
    print(
        "| engine | ok | sweep wall (s) | sum of train_seconds (s) | wall / train | sum of point wall (s) "
        "| overhead per point (s) | load avg at end |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['ok']}/{r['points']} | {r['wall']:.1f} | {r['train']:.1f} | "
            f"{r['wall'] / max(r['train'], 1e-9):.1f}x | {r['point_wall']:.1f} | {r['overhead']:.2f} | {r['load']:.1f} |"
        )
    local, ray = rows
    print(
        f"\nRay's sweep wall is {ray['wall'] / local['wall']:.2f}x the local queue's on the same cores "
        f"(overhead per point {ray['overhead']:.2f} s vs {local['overhead']:.2f} s)."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200)
    p.add_argument("--chunk", type=int, default=20)
    p.add_argument("--slots", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    if args.points % len(DATASETS):
        raise SystemExit(f"--points must be a multiple of {len(DATASETS)}")
    if os.environ.get(INSIDE):
        return inside(args)
    env = {**os.environ, INSIDE: "1", "RAY_USAGE_STATS_ENABLED": "0"}
    os.execvpe("unshare", ["unshare", "-n", sys.executable, *sys.argv], env)


if __name__ == "__main__":
    main()
