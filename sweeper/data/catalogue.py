"""List the dataset catalogue: `python -m sweeper.datasets [--glob 'fortune_*'] [--task generation] [--markdown]`.

One row per spec in conf/dataset/: name, family, task, number of labels, split sizes and the
test accuracy of always predicting train's most frequent label (the floor any model must beat).
Datasets are materialised into the cache as needed (seconds for the whole catalogue, once).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from .. import tasks
from .cache import materialise, read_meta
from .spec import SPLITS, DatasetError, load_spec, spec_names

COLUMNS = ["name", "family", "task", "labels", "train", "validation", "test", "majority"]


def summarise(name: str, cache_dir: Path | None = None) -> dict:
    """One catalogue row; reads only the cached parquet label columns, not the texts."""
    import pyarrow.parquet as pq

    spec = load_spec(name)
    folder = materialise(spec, cache_dir)
    meta = read_meta(folder)
    row = {
        "name": name,
        "family": spec.get("family", ""),
        "task": meta["task"],
        "labels": "",
        "majority": "",
        **{s: meta["sizes"].get(s, "") for s in SPLITS},
    }
    task = tasks.get(meta["task"])
    if task.labelled:
        row["labels"] = len(meta["label_names"])
    if task.majority_baseline:
        labels = {
            s: pq.read_table(folder / f"{s}.parquet", columns=["label"])["label"].to_pylist() for s in ("train", "test")
        }
        top = Counter(labels["train"]).most_common(1)[0][0]
        row["majority"] = f"{sum(y == top for y in labels['test']) / len(labels['test']):.3f}"
    return row


def format_rows(rows: list[dict], markdown: bool) -> str:
    table = [COLUMNS] + [[str(r[c]) for c in COLUMNS] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in table]
        return "\n".join([lines[0], "|" + "---|" * len(COLUMNS), *lines[1:]])
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="List the dataset catalogue (conf/dataset).")
    ap.add_argument("--glob", default="*", help="shell pattern on names, e.g. 'fortune_*', '*langid*'")
    ap.add_argument("--task", choices=tasks.names(), default=None, help="only datasets of this task")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (for docs)")
    ap.add_argument("--cache-dir", type=Path, default=None, help="default: $SWEEPER_CACHE/datasets")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    names = spec_names(args.glob)
    if args.task:  # the spec says its task: no need to build the data to filter
        names = [n for n in names if load_spec(n).get("task") == args.task]
    if not names:
        print(f"no dataset matches {args.glob!r}" + (f" with task {args.task}" if args.task else ""), file=sys.stderr)
        return 1
    rows, errors = [], []
    for name in tqdm(names, desc="datasets", unit="ds", file=sys.stderr, disable=len(names) < 5):
        try:
            rows.append(summarise(name, args.cache_dir))
        except DatasetError as e:
            errors.append(str(e))
    print(format_rows(rows, args.markdown))
    families = Counter(r["family"] for r in rows)
    print(f"\n{len(rows)} datasets: " + ", ".join(f"{f} {n}" for f, n in sorted(families.items())), file=sys.stderr)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
