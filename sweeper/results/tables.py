"""The numbers of a sweep report, as DataFrames (reused by plots, the report and the notebook).

A *configuration* is model/method/rank (plus any other hyper-parameter the sweep varied, see
collect.hyper_columns); a *point* is one dataset x configuration, averaged over seeds.
Scores are the task's headline metric: test accuracy (classification, higher is better) or
perplexity (lm, lower is better). Tie rule: two scores tie when they differ by at most TIE_TOL
(absolute accuracy, i.e. half a percentage point) or, for perplexity, by at most TIE_TOL relative
to the baseline. See docs/results.md.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..records import Status
from . import collect
from .collect import MISSING, PRIMARY

OK, FAILED = Status.OK.value, Status.FAILED.value
TIE_TOL = 0.005
BASELINE_METHOD = "full"
_KEY = ["task", "dataset", "config"]
SUMMARY_COLUMNS = _KEY + [
    "metric",
    "model",
    "method",
    "r",
    "mean",
    "std",
    "n_seeds",
    "n_failed",
    "majority",
    "trainable_params",
    "total_params",
    "train_seconds",
    "peak_memory_mb",
    "errors",
    "status",
]


# ---------------------------------------------------------------- numbers


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point (task, dataset, config): seed mean and sample std (ddof=1, NaN for a
    single seed) of the headline metric, seed counts, and mean cost."""
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    ok = df["status"] == OK
    work = df.assign(_ok=ok, _bad=~ok)
    # Cost from successful runs only: a run that died at step 3 would drag the means down.
    work = work.assign(
        **{f"_{c}": work[c].where(ok) for c in ["trainable_params", "total_params", "train_seconds", "peak_memory_mb"]}
    )
    agg = work.groupby(_KEY, sort=False).agg(
        model=("model", "first"),
        method=("method", "first"),
        r=("r", "first"),
        mean=("score", "mean"),
        std=("score", "std"),
        n_seeds=("_ok", "sum"),
        n_failed=("_bad", "sum"),
        majority=("majority_accuracy", "mean"),
        trainable_params=("_trainable_params", "median"),
        total_params=("_total_params", "median"),
        train_seconds=("_train_seconds", "mean"),
        peak_memory_mb=("_peak_memory_mb", "mean"),
        errors=("error", _first_error),
    )
    agg = agg.reset_index()
    agg.insert(3, "metric", agg["task"].map(lambda t: PRIMARY.get(t, ("?", True))[0]))
    agg["n_seeds"] = agg["n_seeds"].astype(int)
    agg["n_failed"] = agg["n_failed"].astype(int)
    agg["status"] = np.where(agg["n_seeds"] == 0, FAILED, np.where(agg["n_failed"] > 0, "partial", OK))
    order = {c: i for i, c in enumerate(collect.config_order(df))}
    agg = agg.assign(_o=agg["config"].map(order)).sort_values(["task", "dataset", "_o"])
    return agg.drop(columns="_o").reset_index(drop=True)


def _first_error(errors: pd.Series) -> str | None:
    errors = errors.dropna()
    return str(errors.iloc[0]) if len(errors) else None


def higher_is_better(task: str) -> bool:
    return PRIMARY.get(task, ("", True))[1]


def score_matrix(summary: pd.DataFrame, task: str = "classification") -> pd.DataFrame:
    """dataset x config seed means (NaN where failed or missing), configs in canonical order."""
    sub = summary[summary["task"] == task]
    table = sub.pivot(index="dataset", columns="config", values="mean")
    table = table.reindex(columns=collect.config_order(sub))
    table.columns.name = None
    return table


def seed_table(summary: pd.DataFrame, task: str = "classification") -> pd.DataFrame:
    """dataset x config text cells "mean ± std (n)"; FAILED / "(k failed)" / missing spelled out."""
    sub = summary[summary["task"] == task]
    if sub.empty:
        return pd.DataFrame()
    digits = 3 if higher_is_better(task) else 2
    cells = sub.assign(
        cell=[
            _seed_cell(m, s, n, f, digits)
            for m, s, n, f in zip(sub["mean"], sub["std"], sub["n_seeds"], sub["n_failed"])
        ]
    )
    table = cells.pivot(index="dataset", columns="config", values="cell")
    table = table.reindex(columns=score_matrix(summary, task).columns).fillna(MISSING)
    table.columns.name = None
    return table


def _seed_cell(mean: float, std: float, n: int, failed: int, digits: int) -> str:
    if n == 0:
        return "FAILED"
    text = f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}") + f" ({n})"
    return text + (f" +{failed} failed" if failed else "")


def best_configs(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the best configuration by seed mean (ties broken by fewer trainable params,
    then canonical config order) and its margin over the runner-up."""
    rows = []
    for (task, dataset), sub in summary.dropna(subset=["mean"]).groupby(["task", "dataset"], sort=True):
        ranked = sub.assign(
            _s=sub["mean"] * (-1 if higher_is_better(task) else 1), _p=sub["trainable_params"].fillna(float("inf"))
        )
        ranked = ranked.sort_values(["_s", "_p"], kind="stable")
        best = ranked.iloc[0]
        runner = ranked.iloc[1] if len(ranked) > 1 else None
        rows.append(
            {
                "task": task,
                "dataset": dataset,
                "best_config": best["config"],
                "metric": best["metric"],
                "mean": best["mean"],
                "std": best["std"],
                "n_seeds": best["n_seeds"],
                "runner_up": None if runner is None else runner["config"],
                "margin": np.nan if runner is None else abs(best["mean"] - runner["mean"]),
                "n_configs": len(sub),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "task",
            "dataset",
            "best_config",
            "metric",
            "mean",
            "std",
            "n_seeds",
            "runner_up",
            "margin",
            "n_configs",
        ],
    )


def mean_ranks(summary: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: mean rank across datasets (1 = best on a dataset; ties share the average
    rank). Only points with a score are ranked; n_datasets says how many that was."""
    scored = summary.dropna(subset=["mean"])
    parts = []
    for task, sub in scored.groupby("task"):
        ranks = sub.groupby("dataset")["mean"].rank(ascending=not higher_is_better(task), method="average")
        parts.append(sub.assign(rank=ranks))
    if not parts:
        return pd.DataFrame(columns=["task", "config", "mean_rank", "n_datasets"])
    ranked = pd.concat(parts)
    out = ranked.groupby(["task", "config"], sort=False).agg(mean_rank=("rank", "mean"), n_datasets=("rank", "size"))
    return out.reset_index()


def is_tie(a: float, b: float, task: str, tol: float = TIE_TOL) -> bool:
    """The tie rule: |a - b| <= tol for accuracy; <= tol * b (relative) for perplexity."""
    return abs(a - b) <= (tol if higher_is_better(task) else tol * abs(b))


def compare(score: float, baseline: float, task: str, tol: float = TIE_TOL) -> str:
    """ "win", "tie" or "loss" of `score` against `baseline` under the tie rule."""
    if is_tie(score, baseline, task, tol):
        return "tie"
    return "win" if (score > baseline) == higher_is_better(task) else "loss"


def win_tie_loss(summary: pd.DataFrame, against: str = "full", tol: float = TIE_TOL) -> pd.DataFrame:
    """Per configuration: wins/ties/losses over datasets against a baseline.

    against="full": the best full fine-tuning config of the same dataset and model
    (method == "full"); full configs themselves are not compared.
    against="majority": the majority-class accuracy (classification only).
    Points without a score or without a baseline are counted in `n_unmatched`, not silently dropped.
    """
    base = _baselines(summary, against)
    sub = summary if against != "full" else summary[summary["method"] != BASELINE_METHOD]
    if against == "majority":
        sub = sub[sub["task"] == "classification"]
    rows = {}
    for point in sub.itertuples(index=False):
        key = (point.task, point.config)
        counts = rows.setdefault(
            key, {"task": point.task, "config": point.config, "win": 0, "tie": 0, "loss": 0, "n_unmatched": 0}
        )
        baseline = base(point)
        if pd.isna(point.mean) or baseline is None or pd.isna(baseline):
            counts["n_unmatched"] += 1
        else:
            counts[compare(point.mean, baseline, point.task, tol)] += 1
    return pd.DataFrame(list(rows.values()), columns=["task", "config", "win", "tie", "loss", "n_unmatched"])


def _baselines(summary: pd.DataFrame, against: str):
    """A function point -> baseline score (or None)."""
    if against == "majority":
        return lambda point: point.majority if not pd.isna(point.majority) else None
    if against != "full":
        raise ValueError(f"against must be 'full' or 'majority', not {against!r}")
    full = summary[(summary["method"] == BASELINE_METHOD)].dropna(subset=["mean"])
    best = {}
    for row in full.itertuples(index=False):
        key = (row.task, row.dataset, row.model)
        better = max if higher_is_better(row.task) else min
        best[key] = row.mean if key not in best else better(best[key], row.mean)
    return lambda point: best.get((point.task, point.dataset, point.model))


def config_table(summary: pd.DataFrame, tol: float = TIE_TOL) -> pd.DataFrame:
    """Per configuration: mean score over datasets, mean rank, W/T/L vs full and vs majority, cost."""
    if summary.empty:
        return pd.DataFrame()
    per = (
        summary.groupby(["task", "config"], sort=False)
        .agg(
            model=("model", "first"),
            method=("method", "first"),
            r=("r", "first"),
            mean_score=("mean", "mean"),
            n_points=("dataset", "size"),
            failed_points=("status", lambda s: int((s == FAILED).sum())),
            trainable_params=("trainable_params", "median"),
            train_seconds=("train_seconds", "mean"),
            peak_memory_mb=("peak_memory_mb", "mean"),
        )
        .reset_index()
    )
    per = per.merge(mean_ranks(summary), on=["task", "config"], how="left")
    for against in ("full", "majority"):
        wtl = win_tie_loss(summary, against, tol).set_index(["task", "config"])
        text = wtl["win"].astype(str) + "/" + wtl["tie"].astype(str) + "/" + wtl["loss"].astype(str)
        # points without a score or a baseline: say so, or 0/0/0 would read as "never compared badly"
        text = text + wtl["n_unmatched"].map(lambda n: f" ({n} n/a)" if n else "")
        per[f"vs_{against} W/T/L"] = [text.get((t, c), "") for t, c in zip(per["task"], per["config"])]
    return per.sort_values(["task", "mean_rank"], na_position="last").reset_index(drop=True)
