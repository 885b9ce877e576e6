"""Planning a ~110,000-point grid with sweeper.dry_run=true: wall time, resident memory, per point,
next to bare Hydra composition of points of the same grid measured in the same run.

    python scripts/bench_planner.py            # prints a markdown section for BENCHMARKS.md

The grid: every dataset x 2 models x 3 methods x 3 ranks x 3 seeds x 4 lr x 2 batch sizes.
`python -m sweeper -m ... sweeper.dry_run=true` plans it (composition, run ids, skip rule over
110k run folders) and submits nothing. Hydra's own route composed every point twice (its
BasicSweeper validates the batch, then the launcher composed again): 2 x the bare figure.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = [
    "dataset=glob(*)",
    "model=minilm,smollm2",
    "method=lora,relora,full",
    "method.r=4,8,16",
    "train.seed=0,1,2",
    "train.lr=1e-4,3e-4,1e-3,3e-3",
    "train.batch_size=8,16",
]
SAMPLE = 20  # points composed by bare Hydra


def dry_run(results: Path) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "sweeper", "-m", *GRID, "hydra/launcher=slurm", "sweeper.dry_run=true"]
    cmd += [f"sweeper.results_dir={results}", f"hydra.sweep.dir={results / 'jobs'}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, rss_mb, proc.stdout


def bare_hydra_seconds_per_point() -> float:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from sweeper.paths import CONF_DIR

    datasets = sorted(p.stem for p in (CONF_DIR / "dataset").glob("*.yaml"))[:SAMPLE]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra/launcher=slurm"], RunMode.MULTIRUN)
        t0 = time.perf_counter()
        for i, name in enumerate(datasets):
            loader.load_sweep_config(master, [f"dataset={name}", "model=smollm2", "method=relora", f"method.r={4 + i}"])
        return (time.perf_counter() - t0) / len(datasets)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wall, rss_mb, out = dry_run(Path(tmp) / "results")
    bare = bare_hydra_seconds_per_point()
    grid_line = next(line for line in out.splitlines() if line.startswith("sweep "))
    planned = next(line for line in out.splitlines() if line.startswith("planned "))
    would = next(line for line in out.splitlines() if line.startswith("dry run:"))
    points = int(planned.split()[1])
    per_point = wall / points
    print("## Planning a 110,000-point grid (sweeper.dry_run=true)\n")
    print("Command: `python scripts/bench_planner.py` (`make bench-planner`); the grid:\n")
    print("    python -m sweeper -m " + " ".join(f"'{g}'" if "(" in g else g for g in GRID))
    print("        hydra/launcher=slurm sweeper.dry_run=true\n")
    print("| | value |\n|---|---|")
    print(f"| points | {points:,} |")
    print(f"| whole command, wall | {wall:.0f} s ({1e3 * per_point:.2f} ms a point) |")
    print(f"| peak resident memory | {rss_mb:.0f} MB |")
    print(f"| bare Hydra composition, same run | {1e3 * bare:.0f} ms a point ({SAMPLE} points) |")
    print(f"| Hydra's route (compose twice) for this grid, extrapolated | {2 * bare * points / 60:.0f} min |")
    print(f"| ratio: sweeper's planner / bare Hydra per point | {per_point / bare:.3f} |")
    print(f"\nIts output: `{grid_line}`; `{planned}`; `{would}`\n")


if __name__ == "__main__":
    main()
