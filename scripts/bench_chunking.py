"""Chunking benchmark: N small grid points as one process per point vs K points per process.

    python scripts/bench_chunking.py [--points 50] [--chunk 10] [--workers 2] [--steps 5]

Both sweeps run the same grid (tiny LSTM, LoRA, `--steps` steps, 50 test examples) on the local queue
(`hydra/launcher=local`, 1 thread per worker) into fresh results folders. Reported per mode: sweep wall
time, the summed pure training time of the points (record cost.train_seconds), their ratio (the
orchestration overhead factor: process start, imports, data, model build, evaluation) and the CPU
time of the whole process tree. Prints a markdown snippet for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeper.records import find_records, read_record  # noqa: E402

DATASETS = [
    "fortune_computers_vs_rest",
    "fortune_art_vs_rest",
    "fortune_law_vs_rest",
    "fortune_food_vs_rest",
    "fortune_love_vs_rest",
    "fortune_work_vs_rest",
    "fortune_kids_vs_rest",
    "fortune_linux_vs_rest",
    "fortune_science_vs_rest",
    "fortune_sports_vs_rest",
]
RANKS = [1, 2, 4, 8, 16]


def grid(points: int) -> list[str]:
    n_data = max(1, min(len(DATASETS), -(-points // len(RANKS))))
    n_rank = max(1, points // n_data)
    if n_data * n_rank != points:
        raise SystemExit(f"--points {points}: use a multiple of {len(RANKS)} up to {len(DATASETS) * len(RANKS)}")
    return [f"dataset={','.join(DATASETS[:n_data])}", f"method.r={','.join(map(str, RANKS[:n_rank]))}"]


def warm_data(points: int) -> None:
    """Build the datasets' parquet caches first, so neither mode pays for it."""
    code = (
        "import sys; from sweeper.data import load_splits; from sweeper.config import compose\n"
        "for d in sys.argv[1:]: load_splits(compose(f'dataset={d}').dataset)"
    )
    n_data = len(grid(points)[0].split("=")[1].split(","))
    subprocess.run([sys.executable, "-c", code, *DATASETS[:n_data]], check=True, cwd=REPO)


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_mode(root: Path, points: int, chunk: int, workers: int, steps: int) -> dict:
    results = root / f"chunk{chunk}"
    cmd = [
        sys.executable,
        "-m",
        "sweeper",
        "-m",
        "hydra/launcher=local",
        f"hydra.launcher.workers={workers}",
        "hydra.launcher.threads=1",
        "hydra.launcher.poll_s=0.5",
        "model=lstm",
        *grid(points),
        f"train.max_steps={steps}",
        "train.eval_size=50",
        f"sweeper.chunk={chunk}",
        f"sweeper.results_dir={results}",
        f"hydra.sweep.dir={root / f'jobs{chunk}'}",
    ]
    cpu0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    records = [read_record(p) for p in find_records(results)]
    ok = [r for r in records if r["status"] == "ok"]
    train = sum(r["cost"]["train_seconds"] for r in ok)
    return {
        "chunk": chunk,
        "jobs": -(-points // chunk),
        "points": len(records),
        "ok": len(ok),
        "wall": wall,
        "train": train,
        "point_wall": sum(r["wall_seconds"] for r in ok),
        "cpu": cpu,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=50)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    warm_data(args.points)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_chunking_") as tmp:
        for chunk in (1, args.chunk):
            row = run_mode(Path(tmp), args.points, chunk, args.workers, args.steps)
            rows.append(row)
            print(f"chunk={chunk}: {row['ok']}/{row['points']} ok in {row['wall']:.1f}s", file=sys.stderr, flush=True)
    print(f"\n### Chunking: {args.points} points, one process per point vs {args.chunk} per process\n")
    print(
        f"Local queue, {args.workers} workers x 1 thread, tiny LSTM + LoRA, {args.steps} steps, 50 test examples; "
        f"{os.cpu_count()} cores. `make bench-chunking`.\n"
    )
    print(
        "| points per job | jobs | sweep wall (s) | sum of train_seconds (s) | wall / train | "
        "sum of point wall (s) | CPU, whole tree (s) | load avg at end |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['chunk']} | {r['jobs']} | {r['wall']:.1f} | {r['train']:.1f} | {r['wall'] / max(r['train'], 1e-9):.0f}x "
            f"| {r['point_wall']:.1f} | {r['cpu']:.1f} | {r['load']:.1f} |"
        )
    speedup = rows[0]["wall"] / rows[1]["wall"]
    print(
        f"\nChunking by {args.chunk} makes the sweep {speedup:.1f}x faster in wall time and uses "
        f"{rows[0]['cpu'] / max(rows[1]['cpu'], 1e-9):.1f}x less CPU: each process pays the imports "
        "(torch, transformers, peft) and submitit's start once per job instead of once per point."
    )


if __name__ == "__main__":
    main()
