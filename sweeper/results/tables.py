"""The numbers of a sweep report, as DataFrames (reused by plots, the report and the notebook).

A *configuration* is model/method/rank (plus any other setting the sweep varied, see
configs.hyper_columns); a *point* is one dataset x configuration, averaged over seeds.
Scores are the task's headline metric: accuracy (classification, higher is better) or perplexity
(lm, lower is better).

Selection: the best configuration of a dataset (and the full / tfidf baselines it is compared
with) is chosen on the **validation** score and reported with its **test** score, so the table is
not selected on the data it reports. Records without validation scores (schema 1) fall back to
test, and the tables say so (`selected_on`).
Win / tie / loss against the baselines, and the configuration and method tables that count them:
sweeper.results.baselines; across datasets: sweeper.results.across.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import tasks
from ..records import Status
from . import collect
from .collect import MISSING

OK, FAILED = Status.OK.value, Status.FAILED.value
TIE_TOL = 0.005  # the tolerance rule, for comparisons without predictions or seeds (lm, schema 1)
_KEY = ["task", "dataset", "config"]
COST_COLUMNS = [
    "trainable_params",
    "total_params",
    "train_seconds",
    "seconds_per_step",
    "peak_memory_mb",
    "estimated_memory_mb",
]
SUMMARY_COLUMNS = _KEY + [
    "metric",
    "family",
    "model",
    "method",
    "r",
    "mean",
    "std",
    "val_mean",
    "n_seeds",
    "n_failed",
    "majority",
    "majority_class",
    *COST_COLUMNS,
    "errors",
    "status",
    "scores",
    "seeds",
    "run_dirs",
]


# ---------------------------------------------------------------- numbers


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point (task, dataset, config): seed mean and sample std (ddof=1, NaN for a
    single seed) of the test score, seed mean of the validation score, seed counts, mean cost, and
    the ok runs' seeds, scores and folders (for the significance tests)."""
    if df.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    ok = df["status"] == OK
    work = df.assign(_ok=ok, _bad=~ok, family=family_of(df))
    # Cost from successful runs only: a run that died at step 3 would drag the means down.
    work = work.assign(**{f"_{c}": work[c].where(ok) if c in work else float("nan") for c in COST_COLUMNS})
    agg = work.groupby(_KEY, sort=False).agg(
        family=("family", "first"),
        model=("model", "first"),
        method=("method", "first"),
        r=("r", "first"),
        mean=("score", "mean"),
        std=("score", "std"),
        val_mean=("val_score", "mean"),
        n_seeds=("_ok", "sum"),
        n_failed=("_bad", "sum"),
        majority=("majority_accuracy", "mean"),
        majority_class=("majority_class", "first"),
        trainable_params=("_trainable_params", "median"),
        total_params=("_total_params", "median"),
        train_seconds=("_train_seconds", "mean"),
        seconds_per_step=("_seconds_per_step", "mean"),
        peak_memory_mb=("_peak_memory_mb", "mean"),
        estimated_memory_mb=("_estimated_memory_mb", "mean"),
        errors=("error", _first_error),
    )
    agg = agg.reset_index()
    runs = work[ok & work["score"].notna()].sort_values("seed", kind="stable").groupby(_KEY, sort=False)
    for column, source in [("scores", "score"), ("seeds", "seed"), ("run_dirs", "run_dir")]:
        values = runs[source].agg(tuple)
        agg[column] = [values.get(tuple(k), ()) for k in agg[_KEY].itertuples(index=False)]
    agg.insert(3, "metric", agg["task"].map(lambda t: getattr(tasks.find(t), "primary", "?")))
    agg["n_seeds"] = agg["n_seeds"].astype(int)
    agg["n_failed"] = agg["n_failed"].astype(int)
    agg["status"] = np.where(agg["n_seeds"] == 0, FAILED, np.where(agg["n_failed"] > 0, "partial", OK))
    order = {c: i for i, c in enumerate(collect.config_order(df))}
    agg = agg.assign(_o=agg["config"].map(order)).sort_values(["task", "dataset", "_o"])
    return agg.drop(columns="_o").reset_index(drop=True)


def family_of(df: pd.DataFrame) -> pd.Series:
    """Each run's dataset family: the record's, else the dataset name's first word (names start
    with their family: fortune_computers -> fortune)."""
    from_name = df["dataset"].astype(str).str.split("_").str[0]
    return df["family"].fillna(from_name) if "family" in df else from_name


def _first_error(errors: pd.Series) -> str | None:
    errors = errors.dropna()
    return str(errors.iloc[0]) if len(errors) else None


def higher_is_better(task: str) -> bool:
    return getattr(tasks.find(task), "higher_is_better", True)


def score_matrix(summary: pd.DataFrame, task: str = tasks.DEFAULT) -> pd.DataFrame:
    """dataset x config seed means (NaN where failed or missing), configs in canonical order."""
    sub = summary[summary["task"] == task]
    table = sub.pivot(index="dataset", columns="config", values="mean")
    table = table.reindex(columns=collect.config_order(sub))
    table.columns.name = None
    return table


def seed_table(summary: pd.DataFrame, task: str = tasks.DEFAULT) -> pd.DataFrame:
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


# ---------------------------------------------------------------- selection on validation


def ranked(points: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Every group of `by` with its points best first on the selection score: the validation mean
    when every scored point of the group has one, else the test mean (a schema-1 sweep can only be
    selected on test, and `selected_on` says so). Ties: fewer trainable params, then canonical
    config order, which summarize applied.
    Groups keep the order they first appear in.
    One sort over the whole table: a report of 300 datasets x 20 configurations selects thousands
    of groups, and a groupby loop took minutes there."""
    group = points.groupby(by, sort=False, dropna=False).ngroup()
    scored = points.assign(_g=group, _o=np.arange(len(points))).dropna(subset=["mean"])
    on_validation = scored["val_mean"].notna().groupby(scored["_g"]).transform("all")
    sign = np.where(scored["task"].map(higher_is_better), -1.0, 1.0)
    score = np.where(on_validation, scored["val_mean"], scored["mean"]) * sign
    scored = scored.assign(
        _s=score,
        _p=scored["trainable_params"].astype(float).fillna(float("inf")),
        selected_on=np.where(on_validation, "validation", "test"),
        _column=np.where(on_validation, "val_mean", "mean"),
    ).dropna(subset=["_s"])
    return scored.sort_values(["_g", "_s", "_p", "_o"], kind="stable")


def select(summary: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The validation-selected point of every group of `by` (e.g. task, dataset, model, method),
    with a `selected_on` column."""
    best = ranked(summary, by).drop_duplicates("_g", keep="first")
    return best[list(summary.columns) + ["selected_on"]].reset_index(drop=True)


BEST_COLUMNS = ["task", "dataset", "best_config", "selected_on", "metric", "val_mean", "mean", "std", "n_seeds",
                "runner_up", "val_margin", "n_configs"]  # fmt: skip


def best_configs(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: the configuration with the best validation score, its test score (`mean`,
    `std` over seeds), the runner-up on validation and the validation margin."""
    points = summary.sort_values(["task", "dataset"], kind="stable")
    order = ranked(points, ["task", "dataset"])
    if order.empty:
        return pd.DataFrame(columns=BEST_COLUMNS)
    position = order.groupby("_g").cumcount()
    best = order[position == 0].set_index("_g")
    runner = order[position == 1].set_index("_g").reindex(best.index)

    def selection_score(rows: pd.DataFrame) -> np.ndarray:
        return np.where(best["_column"] == "val_mean", rows["val_mean"], rows["mean"]).astype(float)

    sizes = points.groupby(["task", "dataset"], sort=False, dropna=False).size()
    out = best.assign(
        best_config=best["config"],
        runner_up=runner["config"].where(runner["config"].notna(), None),
        val_margin=np.abs(selection_score(best) - selection_score(runner)),
        n_configs=[int(sizes[(t, d)]) for t, d in zip(best["task"], best["dataset"])],
    )
    return out[BEST_COLUMNS].reset_index(drop=True)


def mean_ranks(points: pd.DataFrame, unit: str = "config") -> pd.DataFrame:
    """Per `unit` (config, or the label of a method's validation-selected point): mean rank of the
    test score across datasets (1 = best on a dataset; ties share the average rank)."""
    scored = points.dropna(subset=["mean"])
    parts = []
    for task, sub in scored.groupby("task"):
        ranks = sub.groupby("dataset")["mean"].rank(ascending=not higher_is_better(task), method="average")
        parts.append(sub.assign(rank=ranks))
    if not parts:
        return pd.DataFrame(columns=["task", unit, "mean_rank", "n_datasets"])
    out = (
        pd.concat(parts)
        .groupby(["task", unit], sort=False)
        .agg(mean_rank=("rank", "mean"), n_datasets=("rank", "size"))
    )
    return out.reset_index()


def method_points(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and model/method: the validation-selected configuration (over r, lr, ...),
    labelled `unit` = model/method (the rows of the paper's table)."""
    chosen = select(summary.dropna(subset=["mean"]), ["task", "dataset", "model", "method"])
    chosen["unit"] = chosen["model"].astype(str) + "/" + chosen["method"].astype(str)
    return chosen
