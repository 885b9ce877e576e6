"""The report CLI: summary tables and plots of a sweep.

    python -m sweeper.report results/my_sweep [more sweep folders] [--out DIR] [--tie 0.005]

The numbers are sweeper.results.tables; this module renders them (markdown, HTML, CSV) with the plots.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

import pandas as pd

from .. import tasks
from ..records import Status
from . import collect
from .collect import MISSING
from .markdown import markdown_table
from .tables import (
    TIE_TOL,
    best_configs,
    config_table,
    method_table,
    rule_text,
    seed_table,
    significance_summary,
    summarize,
)

# ---------------------------------------------------------------- renderings


def display_configs(configs: pd.DataFrame) -> pd.DataFrame:
    """config_table / method_table with human units: params with separators, seconds rounded."""
    if configs.empty:
        return configs
    out = configs.drop(columns=["model", "method", "r"], errors="ignore").copy()
    if "trainable_params" in out:
        out["trainable_params"] = out["trainable_params"].map(lambda v: "" if pd.isna(v) else f"{int(v):,}")
    for column, digits in [("mean_score", 4), ("mean_rank", 2), ("train_seconds", 1), ("peak_memory_mb", 0)]:
        if column in out:
            out[column] = out[column].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    return out


def display_best(best: pd.DataFrame) -> pd.DataFrame:
    out = best.rename(columns={"val_mean": "validation", "mean": "test", "std": "test_std"})
    for column in ("validation", "test", "test_std", "val_margin"):
        out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    return out


def named_tables(
    df: pd.DataFrame, tol: float = TIE_TOL, summary: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame]:
    """Every table of the report, display-ready, keyed by a title."""
    summary = summarize(df) if summary is None else summary
    out = {}
    for task in tasks.all_tasks():
        table = seed_table(summary, task.name)
        if not table.empty:
            better = "higher" if task.higher_is_better else "lower"
            out[f"{task.name}: test {task.primary}, mean ± std (number of seeds), {better} is better"] = table
    out["Methods: each one's configuration selected on validation per dataset, scored on test"] = display_configs(
        method_table(summary, tol)
    )
    out["Best configuration per dataset (selected on validation, test score reported)"] = display_best(
        best_configs(summary)
    )
    out["Configurations: test score, mean rank, W/T/L vs validation-selected baselines, cost"] = display_configs(
        config_table(summary, tol)
    )
    out["Failed runs"] = collect.failures(df)
    return out


def intro_text(df: pd.DataFrame, tol: float = TIE_TOL, summary: pd.DataFrame | None = None) -> str:
    """The paragraph above the tables: counts, the W/T/L rule, how many comparisons were significant."""
    parts = [
        overview(df),
        df.attrs.get("repeated_seeds"),
        rule_text(tol),
        significance_summary(summarize(df) if summary is None else summary, tol),
    ]
    return "\n\n".join(p for p in parts if p)


def overview(df: pd.DataFrame) -> str:
    """One paragraph: how many runs, how many failed, which record files could not be read."""
    n_ok = int((df["status"] == Status.OK.value).sum())
    skipped = df.attrs.get("skipped", [])
    text = f"{len(df)} runs: {n_ok} ok, {len(df) - n_ok} failed; {len(skipped)} unreadable record file(s) skipped"
    return text + ("".join(f"\n- `{path}`: {reason}" for path, reason in skipped) if skipped else ".")


def render_markdown(named: dict[str, pd.DataFrame], title: str = "Sweep report", intro: str = "") -> str:
    parts = [f"# {title}\n"] + ([intro + "\n"] if intro else [])
    for name, table in named.items():
        parts += [f"## {name}\n", markdown_table(table, index=not isinstance(table.index, pd.RangeIndex))]
    return "\n".join(parts)


_CSS = (
    "body{font-family:sans-serif} table{border-collapse:collapse;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} td.failed{background:#f8d0d0}"
    "td.missing{color:#999}"
)


def render_html(named: dict[str, pd.DataFrame], title: str = "Sweep report", intro: str = "") -> str:
    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(line)}</p>" for line in intro.splitlines() if line]
    for name, table in named.items():
        frame = table if not table.empty else pd.DataFrame({"": ["(none)"]})
        rendered = frame.to_html(na_rep="", border=0, index=not isinstance(frame.index, pd.RangeIndex))
        rendered = rendered.replace("<td>FAILED</td>", '<td class="failed">FAILED</td>')
        rendered = rendered.replace(f"<td>{MISSING}</td>", f'<td class="missing">{MISSING}</td>')
        body += [f"<h2>{html.escape(name)}</h2>", rendered]
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


STOPPED_TITLE = "Stopped at a halving rung (trained to the rung's budget only; not in the tables above)"
STOPPED_COLUMNS = ["task", "dataset", "config", "seed", "stopped_at_rung", "steps", "max_steps", "val_score", "score"]


def split_stopped(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs trained to their max_steps, runs successive halving stopped at a rung). Stopped runs
    had fewer steps: set beside the finished ones they would look like worse configurations."""
    stopped = df["stopped_at_rung"].notna() if "stopped_at_rung" in df else pd.Series(False, index=df.index)
    finished, halted = df[~stopped].copy(), df[stopped]
    finished.attrs = dict(df.attrs)
    return finished, halted[[c for c in STOPPED_COLUMNS if c in halted]].reset_index(drop=True)


def write_report(
    df: pd.DataFrame, out_dir: str | os.PathLike, tol: float = TIE_TOL, run_ids: list[str] | None = None
) -> dict[str, Path]:
    """summary.md, summary.html, CSVs of the raw numbers and every plot, into `out_dir`."""
    from . import plots  # matplotlib only when plots are wanted

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, stopped = split_stopped(df)
    summary = summarize(df)  # once: every table and the intro read it
    named = named_tables(df, tol, summary)
    if not stopped.empty:
        named[STOPPED_TITLE] = stopped
    title = "Sweep report: " + (", ".join(sorted(df["sweep"].dropna().astype(str).unique())) or "?")
    written = {"summary.md": out / "summary.md", "summary.html": out / "summary.html"}
    intro = intro_text(df, tol, summary)
    if not stopped.empty:
        intro += f"\n\nSuccessive halving stopped {len(stopped)} run(s) at a rung: listed apart, at the end."
    written["summary.md"].write_text(render_markdown(named, title, intro), encoding="utf-8")
    written["summary.html"].write_text(render_html(named, title, intro), encoding="utf-8")
    for name, frame in [
        ("points.csv", summary),
        ("best.csv", best_configs(summary)),
        ("configs.csv", config_table(summary, tol)),
        ("methods.csv", method_table(summary, tol)),
        ("failed.csv", collect.failures(df)),
        ("stopped.csv", stopped),
    ]:
        frame.to_csv(out / name, index=False)
        written[name] = out / name
    written.update(plots.write_plots(df, summary, out, run_ids=run_ids))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sweeper.report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Summary tables of a sweep (mean ± std over seeds; per method and per dataset the\n"
        "configuration selected on validation, with its test score; mean rank; win/tie/loss vs\n"
        "full fine-tuning, the tfidf baseline and the majority class, significant differences\n"
        "only; cost) and plots.",
        epilog="Writes summary.md, summary.html, points/best/configs/methods/failed.csv and PNG plots into\n"
        "PATH/report/ (the first PATH) or --out DIR.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="sweep or results folder(s); several are combined")
    p.add_argument("--out", metavar="DIR", help="output folder (default: FIRST_PATH/report)")
    p.add_argument(
        "--tie",
        type=float,
        default=TIE_TOL,
        metavar="TOL",
        help="tie tolerance where no significance test applies (lm, records without predictions):"
        f" absolute for accuracy, relative for perplexity (default {TIE_TOL})",
    )
    p.add_argument("--runs", nargs="*", metavar="RUN_ID", help="run ids for the loss-curve plot (default: a few)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    df = collect.load_for_cli(args.paths)
    if isinstance(df, int):
        return df
    out = Path(args.out) if args.out else collect.default_out_dir(args.paths) / "report"
    try:
        written = write_report(df, out, tol=args.tie, run_ids=args.runs)
    except OSError as error:  # a colleague's read-only sweep
        return collect.cannot_write(out, error, "--out DIR writes the report elsewhere")
    print(f"report for {len(df)} runs written to {out}/:")
    for name in written:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
