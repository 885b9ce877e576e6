"""Benchmark: collect + pivot of 100,000 synthetic records, and `sweeper.status` over their sweep.

    .venv/bin/python scripts/bench_collect.py [--n 100000] [--keep DIR]

Prints a markdown snippet (command, machine, wall and CPU seconds) for BENCHMARKS.md.
Records are written without fsync (this is synthetic data), so generation is fast; the
collect timing therefore reads from the page cache (a warm cache, as after a sweep finishes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sweeper.results import collect  # noqa: E402

MODELS = ["tiny_llama", "tiny_mistral", "minilm", "smollm2"]
METHODS = [("full", None), ("lora", 4), ("lora", 8), ("lora", 16), ("relora", 8)]


def synthetic_record(dataset: str, model: str, method: str, r: int | None, seed: int, rng: random.Random) -> dict:
    run_id = f"{dataset}-{model}-{method}-r{r}-s{seed}"
    failed = rng.random() < 0.02
    record = {
        "schema_version": 1,
        "run_id": run_id,
        "sweep": "bench",
        "status": "failed" if failed else "ok",
        "error": "CUDA out of memory" if failed else None,
        "error_type": "OutOfMemoryError" if failed else None,
        "dataset": dataset,
        "family": dataset.split("_")[0],
        "task": "classification",
        "model": model,
        "method": method,
        "r": r,
        "alpha": None if r is None else 2.0 * r,
        "seed": seed,
        "lr": 1e-4 if method == "full" else 2e-3,
        "max_steps": 500,
        "config": {
            "dataset": {"name": dataset, "text_column": "text", "label_column": "label"},
            "model": {"name": model, "lora_targets": ["q_proj", "v_proj"], "hidden_size": 128},
            "method": {"name": method, "r": r, "alpha": None if r is None else 2 * r, "dropout": 0.05},
            "train": {"batch_size": 32, "max_steps": 500, "seed": seed},
        },
        "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T00:05:00",
        "host": "node01",
        "train": {"steps": 500, "resumed_from_step": 0, "merges": 2 if method == "relora" else 0},
    }
    if not failed:
        acc = rng.uniform(0.5, 0.95)
        record["metrics"] = {
            "accuracy": acc,
            "macro_f1": acc - 0.05,
            "eval_loss": 1 - acc,
            "majority_accuracy": 0.5,
            "n_test": 500,
            "train_loss_final": 0.4,
        }
        record["params"] = {"trainable": 1000 * (r or 1000), "total": 1_000_000}
        record["cost"] = {"train_seconds": rng.uniform(10, 100), "peak_memory_mb": 900.0, "examples_per_second": 150.0}
    return record


def write_ledger(root: Path) -> None:
    """sweep.json with one local launch that planned every record's point, and its jobs (jobs.jsonl)."""
    from sweeper.ledger import log_jobs, log_launch

    run_ids = sorted(p.name for p in (root / "runs").iterdir())
    launch = {
        "started_at": "2025-01-01T00:00:00+00:00",
        "hydra_sweep_dir": str(root / "jobs"),
        "launcher": "local",
        "command": "python -m sweeper -m ...",
        "monitor": None,
        "points": {rid: {"overrides": rid, "decision": "run"} for rid in run_ids},
    }
    log_launch(root, launch)
    log_jobs(root, launch, [{"job_id": str(k), "run_ids": [rid]} for k, rid in enumerate(run_ids)])


def write_sweep(root: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    grid = [(m, meth, r, s) for m in MODELS for meth, r in METHODS for s in range(5)]  # 100 per dataset
    count = 0
    for d in range((n + len(grid) - 1) // len(grid)):
        for model, method, r, s in grid:
            if count == n:
                return count
            record = synthetic_record(f"fam{d % 7}_ds{d:04d}", model, method, r, s, rng)
            run_dir = root / "runs" / record["run_id"]
            run_dir.mkdir(parents=True)
            (run_dir / "record.json").write_text(json.dumps(record, indent=1, sort_keys=True))
            count += 1
    return count


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="number of records (default 100000)")
    ap.add_argument("--keep", metavar="DIR", help="write the records here and keep them")
    ap.add_argument("--repeat", type=int, default=3, help="time this many times, report the fastest (default 3)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_collect_"))
    n, gen_s, _ = timed(lambda: write_sweep(root, args.n))
    write_ledger(root)
    from sweeper.results.status import sweep_status

    status, status_wall, status_cpu = timed(lambda: sweep_status(root))
    assert status["total"] == n and status["done"] + status["failed"] == n
    runs = []
    for _ in range(max(args.repeat, 1)):  # fastest of N: other jobs on a shared node only add time
        df, load_wall, load_cpu = timed(lambda: collect.load_records(root))
        table, piv_wall, piv_cpu = timed(lambda df=df: collect.pivot(df))
        runs.append((load_wall + piv_wall, load_wall, load_cpu, piv_wall, piv_cpu))
    _, load_wall, load_cpu, piv_wall, piv_cpu = min(runs)
    assert len(df) == n and not table.empty
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"""## Collecting {n:,} records, and the status of their sweep (target: collect < 30 s)

Command: `.venv/bin/python scripts/bench_collect.py --n {args.n}`
Machine: {platform.machine()}, {cores} cores available, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}, pandas {collect.pd.__version__}
Records in the page cache (just written, {gen_s:.1f} s); fastest of {len(runs)} timings.

| step | wall (s) | CPU (s) |
|---|---|---|
| load_records ({n:,} files, {df.shape[1]} columns) | {load_wall:.2f} | {load_cpu:.2f} |
| pivot ({table.shape[0]} datasets x {table.shape[1]} configs) | {piv_wall:.2f} | {piv_cpu:.2f} |
| **collect total** | **{load_wall + piv_wall:.2f}** | **{load_cpu + piv_cpu:.2f}** |
| `sweeper.status` ({n:,} points of one launch, every record read) | {status_wall:.2f} | {status_cpu:.2f} |
""")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
