"""Collect run records into one long table (one row per grid point) and a dataset x config pivot.

    python -m sweeper.collect results/my_sweep [results/other_sweep ...] [--out DIR]

Works on a sweep that is still running: whatever record.json files exist are read; records are
written atomically by the worker, so a file is either complete or absent. Anything unreadable
(truncated copy, hand-edited, wrong schema) is listed in a warning and skipped, never fatal.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .. import tasks
from ..records import Status, find_records, read_many
from .configs import add_config_column, config_order
from .markdown import is_missing, markdown_table

# Top-level record fields copied as they are.
# fmt: off
TOP_FIELDS = ["run_id", "sweep", "status", "error", "error_type", "dataset", "family", "task", "model", "method",
              "r", "alpha", "seed", "lr", "max_steps", "started_at", "finished_at", "wall_seconds", "host",
              "schema_version", "data_fingerprint", "version", "git_commit"]
# fmt: on
# The tasks' scores (sweeper.tasks: Task.metrics, Task.test_metrics), each once, in the tasks' order.
TASK_METRICS = list(dict.fromkeys(m for task in tasks.all_tasks() for m in (*task.metrics, *task.test_metrics)))
METRIC_FIELDS = [*TASK_METRICS, "eval_loss", "n_test", "train_loss_final"]  # the record's top level: test
# Schema 2's metrics.validation section; the top-level metrics are the test ones (both schemas).
VALIDATION_FIELDS = {
    "loss": "val_loss",
    **{m: f"val_{m}" for m in dict.fromkeys(m for task in tasks.all_tasks() for m in task.metrics)},
    "n": "n_validation",
}
# Nested sections renamed to flat, unambiguous columns.
SECTION_FIELDS = {
    "params": {"trainable": "trainable_params", "total": "total_params"},
    "cost": {
        "train_seconds": "train_seconds",
        "peak_memory_mb": "peak_memory_mb",
        "examples_per_second": "examples_per_second",
        "seconds_per_step": "seconds_per_step",
    },
    "adapter": {"peft_type": "peft_type", "size_bytes": "adapter_bytes"},  # PEFT methods (docs/methods.md)
    "train": {
        "steps": "steps",
        "resumed_from_step": "resumed_from_step",
        "merges": "merges",
        "best_step": "best_step",
        "stopped_at_rung": "stopped_at_rung",  # successive halving: trained only to that rung's budget
    },
}
COLUMNS = (
    TOP_FIELDS
    + METRIC_FIELDS
    + list(VALIDATION_FIELDS.values())
    + [c for names in SECTION_FIELDS.values() for c in names.values()]
    + ["estimated_memory_mb", "record_path", "run_dir"]
)
NUMERIC = ["r", "alpha", "seed", "lr", "max_steps", "wall_seconds", *METRIC_FIELDS, *VALIDATION_FIELDS.values(),
           *[c for names in SECTION_FIELDS.values() for c in names.values() if c != "peft_type"],
           "estimated_memory_mb"]  # fmt: skip
MISSING = "missing"  # cell text for a grid point without any record


# ---------------------------------------------------------------- reading
def read_records(*paths: str | os.PathLike) -> tuple[list[dict], list[tuple[str, str]]]:
    """Flat rows of every readable record under `paths`, and (path, reason) for every skipped one."""
    results = read_many(find_records(*paths))
    rows, skipped = [], []
    for path, record, reason in results:
        if record is None:
            skipped.append((path, reason))
        else:
            rows.append(flatten_record(record, path))
    return rows, skipped


def flatten_record(record: dict[str, Any], path: str) -> dict[str, Any]:
    """One table row: top-level fields, metrics/params/cost/train flattened, config as config.* columns."""
    row = {k: record.get(k) for k in TOP_FIELDS}
    metrics = _as_dict(record.get("metrics"))
    for key, value in metrics.items():
        if key not in ("validation", "test"):  # test: the same numbers as the top-level metrics
            row[key if key in METRIC_FIELDS or key not in row else f"metrics.{key}"] = value
    validation = _as_dict(metrics.get("validation"))
    for key, column in VALIDATION_FIELDS.items():
        row[column] = validation.get(key)
    if record.get("schema_version") == 1 and _token_level(record.get("task")):  # schema 1 scored lm on validation
        row["val_perplexity"], row["val_loss"] = row.pop("perplexity", None), row.pop("eval_loss", None)
    for section, names in SECTION_FIELDS.items():
        values = _as_dict(record.get(section))
        for key, column in names.items():
            row[column] = values.get(key)
    # The planner's estimate of the peak (sweeper.memory), beside the measured peak_memory_mb.
    row["estimated_memory_mb"] = _as_dict(_as_dict(record.get("cost")).get("memory_estimate")).get("total_mb")
    if row["seconds_per_step"] is None and _number(row["train_seconds"]) and _number(row["steps"]):
        row["seconds_per_step"] = row["train_seconds"] / row["steps"]  # a record written before the field
    _flatten_into(row, "config", _as_dict(record.get("config")))
    row["record_path"] = str(path)
    row["run_dir"] = os.path.dirname(path)
    return row


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _token_level(name: Any) -> bool:
    task = tasks.find(name)
    return task is not None and task.token_level


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _flatten_into(row: dict, prefix: str, mapping: dict) -> None:
    for key, value in mapping.items():
        name = f"{prefix}.{key}"
        if type(value) is dict:
            _flatten_into(row, name, value)
        elif type(value) is list:
            row[name] = json.dumps(value, default=str)  # one scalar per cell: CSV and parquet stay simple
        else:
            row[name] = value


def load_records(*paths: str | os.PathLike, warn: bool = True) -> pd.DataFrame:
    """Long table of every record under `paths` (several sweep folders may be combined).

    Skipped files are listed in a RuntimeWarning and kept in ``df.attrs["skipped"]``.
    Adds the derived columns ``config`` (label such as "tiny_llama/lora/r4"), ``score`` (the task's
    headline test metric: accuracy for classification, perplexity for lm) and ``val_score`` (the
    same on validation, which the report selects configurations on).
    """
    rows, skipped = read_records(*paths)
    df = pd.DataFrame(rows)
    df = df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS])
    for column in NUMERIC:
        df[column] = pd.to_numeric(df[column], errors="coerce")
    df["r"] = df["r"].astype("Int64")
    df = add_config_column(df)
    df["score"] = primary_score(df)
    df["val_score"] = primary_score(df, "validation")
    df = df.sort_values(["dataset", "config", "seed"], kind="stable", na_position="last")
    df = df.reset_index(drop=True)
    df.attrs["skipped"] = skipped
    df.attrs["repeated_seeds"] = repeated_seeds(df)
    if skipped and warn:
        warnings.warn(format_skipped(skipped), RuntimeWarning, stacklevel=2)
    if df.attrs["repeated_seeds"] and warn:
        warnings.warn(df.attrs["repeated_seeds"], RuntimeWarning, stacklevel=2)
    return df


def repeated_seeds(df: pd.DataFrame) -> str | None:
    """A warning when one dataset x config x seed has several ok runs (sweeps combined across data
    or code versions, or one folder passed twice): they would be averaged as if they were seeds."""
    ok = df[df["status"] == Status.OK.value] if len(df) else df
    if ok.empty:
        return None
    repeated = ok[ok.duplicated(["dataset", "config", "seed"], keep=False)]
    if repeated.empty:
        return None
    fingerprints = repeated.groupby(["dataset", "config", "seed"], dropna=False)["data_fingerprint"].nunique()
    first = repeated.iloc[0]
    return (
        f"{len(repeated)} ok runs share a dataset, config and seed with another run (e.g. {first['dataset']} "
        f"{first['config']} seed {first['seed']}; the data fingerprints differ in {int((fingerprints > 1).sum())} "
        f"of {len(fingerprints)} such groups): they are averaged as if they were seeds"
    )


def format_skipped(skipped: list[tuple[str, str]]) -> str:
    lines = [f"skipped {len(skipped)} unreadable record file(s):"]
    lines += [f"  {path}: {reason}" for path, reason in skipped]
    return "\n".join(lines)


# ---------------------------------------------------------------- scores


def primary_score(df: pd.DataFrame, split: str = "test") -> pd.Series:
    """The headline metric of each row on `split` (test or validation); NaN for failed runs, unknown
    tasks, and validation scores of schema-1 records (they have none)."""
    score = pd.Series(float("nan"), index=df.index)
    ok = df["status"] == Status.OK.value
    for task in tasks.all_tasks():
        mask = ok & (df["task"] == task.name)
        column = task.primary if split == "test" else VALIDATION_FIELDS[task.primary]
        score[mask] = df.loc[mask, column]
    return score


# ---------------------------------------------------------------- pivot


def pivot(df: pd.DataFrame, task: str = tasks.DEFAULT) -> pd.DataFrame:
    """Rows dataset, columns config, cells the seed-mean headline metric as text.

    "FAILED" where every run of the point failed, "0.812 (1/3 failed)" where some did,
    "missing" where no record exists although the config ran elsewhere (not run yet, or lost).
    """
    sub = df[df["task"] == task]
    if sub.empty:
        return pd.DataFrame()
    digits = getattr(tasks.find(task), "digits", 3)
    ok = sub["status"] == Status.OK.value
    grouped = sub.assign(_ok=ok, _bad=~ok).groupby(["dataset", "config"])
    stats = grouped.agg(mean=("score", "mean"), n_ok=("_ok", "sum"), n_bad=("_bad", "sum"))
    cells = [_pivot_cell(m, int(k), int(b), digits) for m, k, b in zip(stats["mean"], stats["n_ok"], stats["n_bad"])]
    table = pd.Series(cells, index=stats.index).unstack("config", fill_value=MISSING)
    table = table.reindex(columns=config_order(sub), fill_value=MISSING)
    table.columns.name = None
    return table


def _pivot_cell(mean: float, n_ok: int, n_bad: int, digits: int) -> str:
    if n_ok == 0:
        return "FAILED"
    text = "n/a" if math.isnan(mean) else f"{mean:.{digits}f}"
    return f"{text} ({n_bad}/{n_ok + n_bad} failed)" if n_bad else text


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """One line per failed run: where, what, and the one-line error."""
    cols = ["dataset", "config", "seed", "status", "error_type", "error", "run_id"]
    return df.loc[df["status"] != Status.OK.value, cols].reset_index(drop=True)


def pivot_markdown(df: pd.DataFrame) -> str:
    """The pivots (each task's headline metric: classification accuracy, multilabel micro-F1, lm
    perplexity, generation chrF) and the failure listing, as markdown."""
    sweeps = ", ".join(sorted(df["sweep"].dropna().astype(str).unique())) or "?"
    n_bad = int((df["status"] != Status.OK.value).sum())
    parts = [
        f"# Sweep results: {sweeps}\n",
        f"{len(df)} runs, {len(df) - n_bad} ok, {n_bad} failed"
        f", {len(df.attrs.get('skipped', []))} unreadable record file(s) skipped.\n",
    ]
    for task in tasks.all_tasks():
        table = pivot(df, task.name)
        if not table.empty:
            better = "higher" if task.higher_is_better else "lower"
            parts += [f"## {task.name}: test {task.primary} (seed mean, {better} is better)\n", markdown_table(table)]
    parts += ["## Failed runs\n", markdown_table(failures(df), index=False)]
    return "\n".join(parts)


# ---------------------------------------------------------------- files and CLI


def parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding mixed types (a config key that is 8 here and "auto" there) become text."""
    out = df.copy()
    for column in out.columns[out.dtypes == object]:  # noqa: E721  a dtype, not a type
        kinds = {type(v) for v in out[column].dropna()}
        if len(kinds) > 1 or (kinds and kinds != {str}):
            out[column] = out[column].map(lambda v: None if is_missing(v) else str(v))
    out.attrs = {}
    return out


def write_outputs(df: pd.DataFrame, out_dir: str | os.PathLike) -> dict[str, Path]:
    """runs.parquet, runs.csv, pivot.md, and each task's pivot in `out_dir`: pivot.csv (classification),
    pivot_lm.csv (lm), pivot_generation.csv (generation: chrF), pivot_multilabel.csv (micro-F1)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"runs.parquet": out / "runs.parquet", "runs.csv": out / "runs.csv", "pivot.md": out / "pivot.md"}
    safe = parquet_safe(df)
    safe.to_parquet(paths["runs.parquet"], index=False)
    safe.to_csv(paths["runs.csv"], index=False)
    paths["pivot.md"].write_text(pivot_markdown(df), encoding="utf-8")
    for task in tasks.all_tasks():
        table = pivot(df, task.name)
        if not table.empty:
            paths[task.pivot_file] = out / task.pivot_file
            table.to_csv(paths[task.pivot_file])
    return paths


def default_out_dir(paths: Iterable[str | os.PathLike]) -> Path:
    first = Path(next(iter(paths)))
    return first.parent if first.is_file() else first


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweeper.collect",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collect the record.json files of one or more sweeps into a table and a\n"
        "dataset x model/method/rank pivot (test accuracy; perplexity for lm, chrF for generation).\n"
        "Failed runs show as FAILED and are listed with their error. Safe on a running sweep.",
        epilog="Writes runs.parquet, runs.csv, pivot.md, pivot.csv (+ pivot_lm.csv, pivot_generation.csv) into the first\n"
        "PATH or --out DIR. Example:\n"
        "  python -m sweeper.collect results/glue_lora results/glue_full --out /tmp/glue",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a results folder, sweep folder, run folder or record.json (several are combined)",
    )
    p.add_argument("--out", metavar="DIR", help="where to write the tables (default: the first PATH)")
    p.add_argument("--no-write", action="store_true", help="only print the pivot")
    return p


def load_for_cli(paths: list[str]) -> pd.DataFrame | int:
    """Records for a command-line reader, or its exit code (2: no such path, 1: no records yet)."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"error: no such path: {', '.join(missing)}", file=sys.stderr)
        return 2
    df = load_records(*paths, warn=False)
    if df.attrs["skipped"]:
        print(format_skipped(df.attrs["skipped"]), file=sys.stderr)
    if df.empty:
        print(f"no records found under {', '.join(paths)} (sweep not started yet?)", file=sys.stderr)
        return 1
    return df


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    df = load_for_cli(args.paths)
    if isinstance(df, int):
        return df
    print(pivot_markdown(df))
    if not args.no_write:
        out = args.out or default_out_dir(args.paths)
        try:
            written = write_outputs(df, out)
        except OSError as error:  # a colleague's read-only sweep: the pivot above is still printed
            return cannot_write(out, error, "--out DIR writes elsewhere, --no-write nowhere")
        print("wrote " + ", ".join(str(p) for p in written.values()), file=sys.stderr)
    return 0


def cannot_write(out: str | os.PathLike, error: OSError, hint: str) -> int:
    """One line (not a traceback) for an output folder that cannot be written; the exit status 2."""
    print(f"error: cannot write into {out}: {error.strerror or error} ({hint})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
