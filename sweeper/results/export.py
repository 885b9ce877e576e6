"""`python -m sweeper.export TRACKER RESULTS`: a finished (or running) sweep's records into a tracker.

    python -m sweeper.export mlflow results/main                       # SQLite store beside the results
    python -m sweeper.export mlflow results/main --tracking-uri http://127.0.0.1:5000 --experiment lora-study

One process ingests every record (one run per point; failed points with their status and error),
so thousands of points never write one store at once. Run it again at any time: unchanged records
are skipped, changed ones replace their run (docs/tracking.md). A tracker that can export declares
`export_records` (sweeper.trackers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..records import find_records, read_many
from ..trackers import TRACKERS


def exporters() -> dict[str, type]:
    return {name: cls for name, cls in TRACKERS.items() if hasattr(cls, "export_records")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sweeper.export",
        description="Export a sweep's records into an experiment tracker (one run per grid point; idempotent).",
    )
    parser.add_argument("tracker", choices=sorted(exporters()), help="the tracker to export into")
    parser.add_argument("results", type=Path, help="a results folder (results/<sweeper.name>)")
    parser.add_argument("--tracking-uri", help="where to (default: sqlite:///RESULTS/mlflow.db)")
    parser.add_argument("--experiment", help="experiment name (default: each record's sweep name)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results} is not a folder of results", file=sys.stderr)
        return 2
    tracker = exporters()[args.tracker]
    records, unreadable = [], 0
    for path, record, _problem in read_many(find_records(args.results)):
        if record is None:
            unreadable += 1
            continue
        records.append((Path(path).parent, record))
    if not records:
        print(f"error: no records under {args.results}", file=sys.stderr)
        return 2
    uri = args.tracking_uri or tracker.default_store(args.results)
    counts = tracker.export_records(records, uri, args.experiment)
    skipped = f"; {unreadable} unreadable record(s) left out" if unreadable else ""
    print(
        f"{args.tracker}: {len(records)} point(s) -> {uri}: {counts['new']} new, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged{skipped}"
    )
    if uri.startswith("sqlite:"):
        print(f"browse: mlflow ui --backend-store-uri {uri}")
    return 0
