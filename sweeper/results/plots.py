"""PNG plots of a sweep. Figures are built with the object API on an Agg canvas (sweeper.results.figure):
no pyplot state, no display needed (cluster nodes, tests), and notebooks show the written PNGs.

Every function takes the tables of sweeper.report / sweeper.collect, writes one PNG and returns
its path. When there is nothing to draw (no ReLoRA run, no metrics.jsonl yet) the PNG says so
instead of being absent, so a report always has the same files. The dataset x method views
(heatmaps, critical-difference diagrams) are in sweeper.results.matrix_plots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tasks
from ..records import METRICS_NAME, Status
from .figure import color_map, marker_map, new_figure, placeholder, save, tasks_in
from .matrix_plots import cd_diagram, family_heatmaps, heatmap

__all__ = ["cd_diagram", "heatmap", "write_plots"]

# ---------------------------------------------------------------- score vs rank


def score_vs_rank(summary: pd.DataFrame, path: str | os.PathLike, dataset: str | None = None) -> Path:
    """Score against LoRA rank, one line per model/method; full fine-tuning as a dashed level.

    Over all datasets: mean of the seed means, error bar = standard error across datasets.
    For one `dataset`: the seed mean, error bar = seed std.
    """
    sub = summary.dropna(subset=["mean"])
    if dataset is not None:
        sub = sub[sub["dataset"] == dataset]
    shown = tasks_in(sub)
    if not shown:
        return placeholder(path, "no successful runs to plot")
    fig = new_figure(6.5 * len(shown), 4.5)
    colors, markers = color_map(sub["model"]), marker_map(sub["method"])
    for k, task in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), k + 1)
        _rank_panel(ax, sub[sub["task"] == task.name], colors, markers, dataset is not None, task.higher_is_better)
        metric, higher, task = task.primary, task.higher_is_better, task.name
        ax.set_title(f"{task}" + (f" – {dataset}" if dataset else " – mean over datasets ± s.e."))
        ax.set_xlabel("LoRA rank r")
        ax.set_ylabel(f"test {metric} ({'higher' if higher else 'lower'} is better)")
        ax.legend(fontsize=7)
    return save(fig, path)


MAX_PANEL_LINES = 12  # model/method lines per rank panel: more are a tangle


def _rank_panel(ax, sub: pd.DataFrame, colors: dict, markers: dict, per_dataset: bool, higher: bool) -> None:
    line = [c.replace(f"/r{int(r)}", "") if not pd.isna(r) else c for c, r in zip(sub["config"], sub["r"])]
    sub = sub.assign(line=line)
    best_first = sub.groupby("line")["mean"].mean().sort_values(ascending=not higher)
    shown, rest = _capped(best_first, MAX_PANEL_LINES)
    if rest:
        ax.text(0.01, 0.01, f"the {MAX_PANEL_LINES} best lines shown, {rest} more in configs.csv", fontsize=7,
                transform=ax.transAxes)  # fmt: skip
    for name, group in sub[sub["line"].isin(shown.index)].groupby("line"):
        points = group.groupby("r" if group["r"].notna().any() else "config").agg(
            y=("mean", "mean"), sd=("mean", "std"), n=("mean", "size"), seed_sd=("std", "mean")
        )
        err = points["seed_sd"] if per_dataset else points["sd"] / np.sqrt(points["n"])
        color = colors[group["model"].iloc[0]]
        if group["r"].isna().all():  # full fine-tuning: no rank axis, a level to compare against
            y, e = points["y"].iloc[0], err.fillna(0).iloc[0]
            ax.axhline(y, color=color, ls="--", lw=1, label=f"{name}")
            ax.axhspan(y - e, y + e, color=color, alpha=0.1)
            continue
        x = points.index.astype(float)
        ax.errorbar(
            x,
            points["y"],
            yerr=err.fillna(0),
            color=color,
            capsize=3,
            marker=markers[group["method"].iloc[0]],
            label=name,
        )
    ranks = sorted(int(r) for r in sub["r"].dropna().unique())
    if ranks:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.minorticks_off()


# ---------------------------------------------------------------- training curves


def read_metrics(run_dir: str | os.PathLike) -> pd.DataFrame:
    """metrics.jsonl of a run as a table; a truncated last line (run still going) is skipped."""
    path = Path(run_dir) / METRICS_NAME
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(item, dict) and "step" in item:
                    rows.append(item)
    except OSError:
        pass
    return pd.DataFrame(rows)


def default_curve_runs(df: pd.DataFrame, max_runs: int = 8) -> list[str]:
    """One run per configuration (lowest seed) on the dataset with the most successful runs."""
    ok = df[df["status"] == Status.OK.value]
    if ok.empty:
        return []
    dataset = ok["dataset"].value_counts().index[0]
    picked = ok[ok["dataset"] == dataset].sort_values("seed").drop_duplicates("config")
    return picked["run_id"].head(max_runs).tolist()


def loss_curves(df: pd.DataFrame, path: str | os.PathLike, run_ids: list[str] | None = None) -> Path:
    """Training loss against step for the chosen runs (default: default_curve_runs)."""
    run_ids = run_ids or default_curve_runs(df)
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    drawn = 0
    for row in df[df["run_id"].isin(run_ids)].itertuples(index=False):
        metrics = read_metrics(row.run_dir)
        if "loss" not in metrics:
            continue
        curve = metrics.dropna(subset=["loss"]).drop_duplicates("step", keep="last")  # resumed runs
        ax.plot(curve["step"], curve["loss"], lw=1.2, label=f"{row.dataset} {row.config} s{row.seed}")
        drawn += 1
    if not drawn:
        return placeholder(path, "no metrics.jsonl with a loss for the chosen runs")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.legend(fontsize=7)
    return save(fig, path)


def relora_timeline(df: pd.DataFrame, path: str | os.PathLike, run_id: str | None = None) -> Path:
    """Learning rate and loss of one ReLoRA run with its merge events (vertical lines)."""
    # ReLoRA's runs are those that merged (train.merges in the record): no method name is compared here.
    merged = pd.to_numeric(df.get("merges", pd.Series(index=df.index, dtype=float)), errors="coerce").fillna(0) > 0
    candidates = df[merged & (df["status"] == Status.OK.value)]
    if run_id is not None:
        candidates = df[df["run_id"] == run_id]
    for row in candidates.itertuples(index=False):
        metrics = read_metrics(row.run_dir)
        if "lr" in metrics:
            return _timeline(metrics, f"{row.dataset} {row.config} s{row.seed}", path)
    return placeholder(path, "no ReLoRA run with an lr trace in metrics.jsonl")


def _timeline(metrics: pd.DataFrame, label: str, path) -> Path:
    fig = new_figure(8, 5)
    ax_lr, ax_loss = fig.subplots(2, 1, sharex=True)
    lr = metrics.dropna(subset=["lr"])
    ax_lr.plot(lr["step"], lr["lr"], color="tab:blue")
    ax_lr.set_ylabel("learning rate")
    if "loss" in metrics:
        loss = metrics.dropna(subset=["loss"])
        ax_loss.plot(loss["step"], loss["loss"], color="tab:orange")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_xlabel("step")
    merges = metrics.loc[metrics["event"] == "merge", "step"].tolist() if "event" in metrics else []
    for i, step in enumerate(merges):
        for ax in (ax_lr, ax_loss):
            ax.axvline(step, color="red", ls=":", lw=1, label="merge" if i == 0 and ax is ax_lr else None)
    if len(merges):
        ax_lr.legend(fontsize=8)
    ax_lr.set_title(f"ReLoRA schedule: {label} ({len(merges)} merges)")
    return save(fig, path)


# ---------------------------------------------------------------- score vs cost


def score_vs_cost(summary: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per configuration, mean score over datasets against trainable parameters and seconds per
    training step (log x); one marker per method."""
    per = (
        summary.dropna(subset=["mean"])
        .groupby(["task", "config"], sort=False)
        .agg(
            model=("model", "first"),
            method=("method", "first"),
            r=("r", "first"),
            y=("mean", "mean"),
            params=("trainable_params", "median"),
            step_seconds=("seconds_per_step", "mean"),
        )
        .reset_index()
    )
    shown = tasks_in(per)
    if not shown:
        return placeholder(path, "no successful runs to plot")
    fig = new_figure(12, 4.2 * len(shown))
    colors, markers = color_map(per["model"]), marker_map(per["method"])
    for k, task in enumerate(shown):
        rows = per[per["task"] == task.name]
        rows, rest = _capped(rows.sort_values("y", ascending=not task.higher_is_better), MAX_PANEL_POINTS)
        for j, (column, label) in enumerate([("params", "trainable parameters"), ("step_seconds", "seconds per step")]):
            ax = fig.add_subplot(len(shown), 2, 2 * k + j + 1)
            _cost_panel(ax, rows, column, colors, markers)
            more = f"; the {MAX_PANEL_POINTS} best shown, {rest} more in configs.csv" if rest else ""
            ax.set_xlabel(f"{label} (log){more}")
            ax.set_ylabel(f"{task.name}: test {task.primary}")
    return save(fig, path)


MAX_PANEL_POINTS = 40  # configurations per cost panel; the rest are counted, and listed in configs.csv


def _capped(rows: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, int]:
    return rows.head(limit), max(0, len(rows) - limit)


def _cost_panel(ax, rows: pd.DataFrame, column: str, colors: dict, markers: dict) -> None:
    rows = rows[rows[column] > 0]
    if rows.empty:
        ax.text(0.5, 0.5, "no cost recorded", ha="center", va="center", transform=ax.transAxes)
        return
    for (model, method), group in rows.groupby(["model", "method"]):
        ax.scatter(
            group[column],
            group["y"],
            color=colors[model],
            marker=markers[method],
            label=f"{model}/{method}",
            s=40,
        )
        for x, y, r in zip(group[column], group["y"], group["r"]):
            if not pd.isna(r):
                ax.annotate(f"r{int(r)}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    readable_log_x(ax, rows[column])
    ax.legend(fontsize=7)


def readable_log_x(ax, values) -> None:
    """A log x axis with at most ~6 short labels. Left to itself, matplotlib labels every minor tick
    of a range narrower than a decade in scientific notation (1.08x10^-1, 1.09x10^-1, ...) and the
    labels run into one unreadable band: there, a few evenly spaced ticks written as plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    ax.set_xscale("log")
    low, high = float(np.min(values)), float(np.max(values))
    if high < 10 * low:
        ax.xaxis.set_major_locator(MaxNLocator(5))
    else:  # decades only once the range spans more than two
        subs = (1.0,) if high > 100 * low else (1.0, 2.0, 5.0)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=6))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_number(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _short_number(value: float) -> str:
    """1500 -> 1.5k, 2e6 -> 2M, 0.1083 -> 0.108: tick labels that fit side by side."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


# ---------------------------------------------------------------- all at once


def write_plots(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    out_dir: str | os.PathLike,
    run_ids: list[str] | None = None,
    studies: list = (),
) -> dict[str, Path]:
    """Every plot into `out_dir` (a CD diagram per study of sweeper.results.across); returns file
    name -> path."""
    out = Path(out_dir)
    default = tasks.get(tasks.DEFAULT)  # its heatmap is drawn (a placeholder) even before any result
    written = {default.heatmap_file: heatmap(summary, out / default.heatmap_file, default.name)}
    for task in tasks_in(summary):
        if task is not default:
            written[task.heatmap_file] = heatmap(summary, out / task.heatmap_file, task.name)
        written.update(family_heatmaps(summary, out / task.heatmap_file, task.name))
    for study in studies:
        written[study.diagram_file] = cd_diagram(study, out / study.diagram_file)
    written["score_vs_rank.png"] = score_vs_rank(summary, out / "score_vs_rank.png")
    written["score_vs_cost.png"] = score_vs_cost(summary, out / "score_vs_cost.png")
    written["loss_curves.png"] = loss_curves(df, out / "loss_curves.png", run_ids)
    written["relora_timeline.png"] = relora_timeline(df, out / "relora_timeline.png")
    return written
