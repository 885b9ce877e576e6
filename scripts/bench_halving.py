"""Successive halving vs the full grid on one real grid: the validation-selected test accuracy per
dataset, and what each cost (steps trained, train seconds, wall time), side by side in one run.

The grid: 6 classification datasets x 4 learning rates x 2 LoRA ranks, MiniLM, one seed. Both
sweeps run with Hydra's in-process launcher, one after the other on the same machine.
Usage: python scripts/bench_halving.py [--max-steps 30] [--min-steps 4] [--eta 3] [--eval-size 100]
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = [
    "fortune_art_vs_rest",
    "fortune_computers_vs_rest",
    "wordnet_noun_animal_vs_rest",
    "wordnet_verb_motion_vs_rest",
    "debian_section_python_vs_rest",
    "langid_debian_es_vs_pt",
]
LRS = "1e-4,1e-3,5e-3,2e-2"
RANKS = "4,8"


def grid_command(args, results: Path, search: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "sweeper", "-m", f"dataset={','.join(DATASETS)}", "model=minilm", "method=lora",
        f"train.lr={LRS}", f"method.r={RANKS}", f"train.max_steps={args.max_steps}", f"train.eval_size={args.eval_size}",
        f"train.threads={args.threads}", "train.save_adapter=false", f"sweeper.results_dir={results}",
        f"hydra.sweep.dir={results}/jobs", *search,
    ]  # fmt: skip


def run(cmd: list[str]) -> float:
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.time() - t0


def shown(cmd: list[str], results: Path) -> str:
    return " ".join(shlex.quote(w) for w in ["python", *cmd[1:]]).replace(str(results), "RESULTS")


def main() -> None:
    from sweeper.results import collect
    from sweeper.results.report import split_stopped
    from sweeper.results.tables import best_configs, summarize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=4)
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--eval-size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    halving = [
        "sweeper.search=halving",
        f"sweeper.halving.eta={args.eta}",
        f"sweeper.halving.min_steps={args.min_steps}",
    ]
    rows, commands = {}, []
    with tempfile.TemporaryDirectory(prefix="bench_halving_") as tmp:
        for name, search in (("grid", []), ("halving", halving)):
            results = Path(tmp) / name
            cmd = grid_command(args, results, search)
            wall = run(cmd)
            commands.append(shown(cmd, results))
            df = collect.load_records(results, warn=False)
            finished, stopped = split_stopped(df)
            best = best_configs(summarize(finished)).set_index("dataset")
            rows[name] = {
                "wall": wall,
                "points": len(df),
                "stopped": len(stopped),
                "steps": int(df["steps"].sum()),
                "train_seconds": float(df["train_seconds"].sum()),
                "best": best,
            }
            print(f"{name}: {wall:.0f} s", file=sys.stderr, flush=True)
    grid, halv = rows["grid"], rows["halving"]
    print("## Successive halving vs the full grid (MiniLM LoRA, 6 datasets x 4 lr x 2 ranks), CPU\n")
    print("Commands (RESULTS: a fresh folder each):\n")
    for cmd in commands:
        print(f"    {cmd}")
    print(
        f"\nBoth sweeps: Hydra's in-process launcher, {args.threads} threads, train.max_steps={args.max_steps}, "
        f"eval_size={args.eval_size}, one seed; halving eta={args.eta}, first rung {args.min_steps} steps "
        "(rungs: " + ", ".join(map(str, _budgets(args))) + "), configurations compete per dataset.\n"
    )
    print("| | grid | halving | halving / grid |\n|---|---|---|---|")
    for label, key, fmt in (
        ("points (records)", "points", "{:.0f}"),
        ("stopped at a rung", "stopped", "{:.0f}"),
        ("steps trained (sum)", "steps", "{:.0f}"),
        ("train seconds (sum)", "train_seconds", "{:.0f}"),
        ("wall seconds (whole command)", "wall", "{:.0f}"),
    ):
        ratio = f"{halv[key] / grid[key]:.2f}" if grid[key] else ""
        print(f"| {label} | {fmt.format(grid[key])} | {fmt.format(halv[key])} | {ratio} |")
    print(
        "\nValidation-selected configuration per dataset and its test accuracy; s.e. = the binomial "
        "standard error of a test accuracy on that many rows (one seed: the sampling noise the table can claim):\n"
    )
    print("| dataset | grid: config | test | halving: config | test | difference | s.e. | within 2 s.e. |")
    print("|---|---|---|---|---|---|---|---|")
    within = 0
    for dataset in DATASETS:
        g, h = grid["best"].loc[dataset], halv["best"].loc[dataset]
        se = math.sqrt(max(g["mean"] * (1 - g["mean"]), 1e-9) / args.eval_size)
        diff = h["mean"] - g["mean"]
        within += abs(diff) <= 2 * se
        print(
            f"| {dataset} | {g['best_config']} | {g['mean']:.3f} | {h['best_config']} | {h['mean']:.3f} | "
            f"{diff:+.3f} | {se:.3f} | {'yes' if abs(diff) <= 2 * se else 'no'} |"
        )
    mean_g = grid["best"]["mean"].mean()
    mean_h = halv["best"]["mean"].mean()
    print(
        f"\nMean selected test accuracy: grid {mean_g:.3f}, halving {mean_h:.3f}; {within} of {len(DATASETS)} "
        f"datasets within 2 s.e.; halving trained {halv['steps'] / grid['steps']:.0%} of the grid's steps."
    )


def _budgets(args) -> list[int]:
    from sweeper.launch.halving import rung_budgets

    return rung_budgets(args.min_steps, args.eta, args.max_steps)


if __name__ == "__main__":
    main()
