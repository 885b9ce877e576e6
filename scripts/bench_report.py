"""Benchmark: the report over 30,000 synthetic records (300 datasets x 20 configurations x 5 seeds),
next to collect on the same records, in one run.

    .venv/bin/python scripts/bench_report.py [--n 30000] [--keep DIR]

The records are scripts/bench_collect.py's (schema 1, no predictions: W/T/L by Welch's t on the
five seeds). Prints a markdown section for BENCHMARKS.md. Target: the report under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_collect import timed, write_sweep  # noqa: E402

from sweeper.results import collect, report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000, help="number of records (default 30000)")
    ap.add_argument("--keep", metavar="DIR", help="write the records (and the report) here and keep them")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_report_"))
    n = write_sweep(root, args.n)
    df, load_wall, load_cpu = timed(lambda: collect.load_records(root))
    pivot, pivot_wall, pivot_cpu = timed(lambda: collect.pivot(df))
    written, report_wall, report_cpu = timed(lambda: report.write_report(df, root / "report"))
    html_mb = written["summary.html"].stat().st_size / 2**20
    md_lines = written["summary.md"].read_text().count("\n")
    pngs = sum(name.endswith(".png") for name in written)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    collect_wall = load_wall + pivot_wall
    print(f"""## The report over {n:,} records, next to collect (target: report < 30 s on 2 cores)

Command: `.venv/bin/python scripts/bench_report.py --n {args.n}`
Machine: {platform.machine()}, {cores} cores available, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}
Records: scripts/bench_collect.py's ({df["dataset"].nunique()} datasets x {df["config"].nunique()} configurations x 5 seeds), in the page cache.

| step | wall (s) | CPU (s) | wall / collect |
|---|---|---|---|
| collect: load_records + pivot | {collect_wall:.2f} | {load_cpu + pivot_cpu:.2f} | 1.00 |
| report: tables, tests across datasets, {pngs} plots, summary.md + summary.html | {report_wall:.2f} | {report_cpu:.2f} | {report_wall / collect_wall:.2f} |

The report wrote summary.md ({md_lines:,} lines), summary.html ({html_mb:.1f} MB, plots inline) and {len(written)} files.
Before this change (commit d883432) the same report over the same records took 84.6 s next to
10.8 s of collect, on this machine (measured once, by hand, with that commit's write_report):
validation selection was a groupby loop over thousands of groups and every Welch test a separate
scipy call; now it is one sort and one vectorised `ttest_ind_from_stats`, and the report also runs
the tests across datasets and draws {pngs} plots.
""")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
