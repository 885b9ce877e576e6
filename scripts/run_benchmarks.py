"""`make bench`: run every benchmark of the project and rewrite BENCHMARKS.md.

Each benchmark is a script that prints one markdown section (its command, settings, a table with
ratios measured side by side in that one run). This script runs them one after another on a quiet
machine, and writes them under a header naming the machine, the date and the commit.
Usage: python scripts/run_benchmarks.py [--only NAME ...] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = {  # name -> script, or [script, its arguments] (in the order they appear in BENCHMARKS.md)
    "lora_full": "bench_lora_full.py",
    "relora": "bench_relora.py",
    "chunking": "bench_chunking.py",
    "pack": "bench_pack.py",
    "distributed": "bench_distributed.py",
    "generation": "bench_generation.py",  # ~30 min: SmolLM2 / tiny_t5 x LoRA / full on 3 generation datasets
    "halving": "bench_halving.py",  # ~35 min: halving vs the full grid, 48 MiniLM points
    "collect": "bench_collect.py",
    "report": "bench_report.py",  # ~1 min: the report over 30,000 records next to collect
    "slurm_submit": "bench_slurm_submit.py",
    "ray": "bench_ray.py",  # ~5 min, root (unshare -n): 200 tiny points through Ray vs the local queue
    "memory": "bench_memory.py",  # ~25 min, ~20 GB: loading a 1.1B Llama 4 ways; the estimate vs 16 measured peaks
    "planner": "bench_planner.py",
    "recipe": "bench_recipe.py",  # ~1 h on 2 CPU cores: the default recipe vs tfidf on 40 datasets
    # ~25 min: MiniLM LoRA vs one-vs-rest tfidf on the 18 multilabel datasets
    "multilabel": ["bench_recipe.py", "--task", "multilabel", "--results", "results/bench_multilabel"],
    # ~1 h: 12 PEFT methods (lora, full, dora, ..., oft) on 12 datasets, lr selected by successive halving
    "methods": "bench_methods.py",
}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB RAM, Python {platform.python_version()}"


def git_sha() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return out.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run just these")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    args = parser.parse_args()
    sections, failures = [], []
    for name, script in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        script, *script_args = [script] if isinstance(script, str) else script
        print(f"== {name}: scripts/{script} {' '.join(script_args)}", file=sys.stderr, flush=True)
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / script), *script_args], capture_output=True, text=True, cwd=REPO
        )
        if proc.returncode != 0:
            failures.append(name)
            sections.append(f"## {name}\n\nFAILED (exit {proc.returncode}):\n\n```\n{proc.stderr[-2000:]}\n```\n")
        else:
            sections.append(proc.stdout.strip() + f"\n\n_(took {time.time() - t0:.0f} s)_\n")
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` (`python scripts/run_benchmarks.py`) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"commit {git_sha()}.\n\nMachine: {machine()}. Load average at start: {os.getloadavg()[0]:.2f}.\n"
        "Every figure is a ratio of configurations measured side by side in the same run; absolute times "
        "vary with the machine and its load.\n"
    )
    args.out.write_text(header + "\n" + "\n".join(sections))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
