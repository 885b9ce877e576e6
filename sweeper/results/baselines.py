"""Win / tie / loss against the baselines, per dataset, and the tables that count them.

Each point (or each method's validation-selected point) is compared with full fine-tuning of the
same model, the tfidf baseline and the majority class; a difference counts only when significant
at significance.ALPHA (paired McNemar on the test predictions with fewer than 3 seeds, Welch's t on
the seeds otherwise; see sweeper.results.significance and docs/results.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import tasks
from .significance import ALPHA, MIN_SEEDS, TOLERANCE, UNREADABLE, Side, compare_many
from .tables import FAILED, TIE_TOL, higher_is_better, mean_ranks, method_points, select

BASELINES = ("full", "tfidf", "majority")


def compared_with(task: str, against: str) -> bool:
    """Whether points of `task` have the baseline `against`: full fine-tuning always; tfidf where a
    classical classifier applies (classification, multilabel); the majority class where the task says."""
    found = tasks.find(task)
    if against == "full":
        return True
    if found is None:
        return False
    return found.majority_baseline if against == "majority" else found.classical


def side(point) -> Side:
    return Side(float(point.mean), tuple(point.scores), tuple(int(s) for s in point.seeds), tuple(point.run_dirs))


def baseline_finder(summary: pd.DataFrame, against: str):
    """A function point -> the baseline's Side (or None): the validation-selected full config of the
    same dataset and model, the validation-selected tfidf config of the dataset, or the majority class."""
    if against == "majority":

        def majority(point):
            if not compared_with(point.task, "majority") or pd.isna(point.majority):
                return None
            constant = None if pd.isna(point.majority_class) else int(point.majority_class)
            return Side(float(point.majority), constant=constant)

        return majority
    if against not in ("full", "tfidf"):
        raise ValueError(f"against must be one of {', '.join(BASELINES)}, not {against!r}")
    by = ["task", "dataset", "model"] if against == "full" else ["task", "dataset"]
    chosen = select(summary[summary["method"] == against], by)
    table = {tuple(getattr(row, k) for k in by): side(row) for row in chosen.itertuples(index=False)}
    return lambda point: table.get(tuple(getattr(point, k) for k in by))


def comparisons(points: pd.DataFrame, summary: pd.DataFrame, against: str, tol: float = TIE_TOL) -> pd.DataFrame:
    """One row per point x baseline: outcome (win/tie/loss/n/a), p-value, test used. Points of the
    baseline's own method are not compared with it."""
    find = baseline_finder(summary, against)
    keys, pairs, unmatched = [], [], []
    for point in points.itertuples(index=False):
        if point.method == against or not compared_with(point.task, against):
            continue
        if against == "full" and point.model == "none":
            continue  # a method without a model (tfidf) has no full fine-tuning of its own
        baseline = find(point)
        keys.append((point.task, point.dataset, point.config))
        matched = not pd.isna(point.mean) and baseline is not None and not pd.isna(baseline.mean)
        unmatched.append(not matched)
        if matched:
            pairs.append((side(point), baseline, higher_is_better(point.task)))
    results = iter(compare_many(pairs, tol))
    rows = []
    for key, missing in zip(keys, unmatched):
        result = None if missing else next(results)
        rows.append(key + (("n/a", np.nan, "") if result is None else (result.outcome, result.p_value, result.test)))
    return pd.DataFrame(rows, columns=["task", "dataset", "config", "outcome", "p_value", "test"])


def win_tie_loss(summary: pd.DataFrame, against: str, tol: float = TIE_TOL, points=None) -> pd.DataFrame:
    """Per configuration of `points` (default: every point): wins / ties / losses over datasets
    against a baseline (significant differences only), and `n_unmatched`: points without a score or
    without a baseline, counted, not dropped."""
    table = comparisons(summary if points is None else points, summary, against, tol)
    counts = pd.crosstab([table["task"], table["config"]], table["outcome"])
    counts = counts.reindex(columns=["win", "tie", "loss", "n/a"], fill_value=0).rename(columns={"n/a": "n_unmatched"})
    return counts.reset_index().rename_axis(columns=None)


def wtl_text(points: pd.DataFrame, summary: pd.DataFrame, against: str, tol: float) -> dict[tuple, str]:
    wtl = win_tie_loss(summary, against, tol, points)
    text = {}
    for row in wtl.itertuples(index=False):
        cell = f"{row.win}/{row.tie}/{row.loss}"
        text[(row.task, row.config)] = cell + (f" ({row.n_unmatched} n/a)" if row.n_unmatched else "")
    return text


def baselines_in(summary: pd.DataFrame) -> list[str]:
    """The baselines a sweep can be compared with: full / tfidf when it ran them, majority for classification."""
    present = {"full": (summary["method"] == "full").any(), "tfidf": (summary["method"] == "tfidf").any()}
    present["majority"] = any(compared_with(t, "majority") for t in summary["task"].unique())
    return [b for b in BASELINES if present[b]]


def significance_summary(summary: pd.DataFrame, tol: float = TIE_TOL, methods: pd.DataFrame | None = None) -> str:
    """One line per baseline: how many comparisons (validation-selected method points) were significant."""
    methods = method_points(summary) if methods is None else methods
    lines = []
    for against in baselines_in(summary):
        table = comparisons(methods, summary, against, tol)
        table = table[table["outcome"] != "n/a"]
        if table.empty:
            continue
        tested = table[~table["test"].isin([TOLERANCE, UNREADABLE])]
        significant = int(tested["outcome"].isin(["win", "loss"]).sum())
        tests = ", ".join(f"{n} {t}" for t, n in table["test"].value_counts().items())
        lines.append(f"vs {against}: {significant} of {len(tested)} tested comparisons significant at "
                     f"alpha={ALPHA:g} ({tests})")  # fmt: skip
        skipped = int((table["test"] == UNREADABLE).sum())
        if skipped:
            lines.append(f"  vs {against}: the paired test was skipped for {skipped} comparison(s) whose "
                         "predictions.parquet does not read (truncated?); the tolerance rule decided them")  # fmt: skip
    return "\n".join(lines)


# ---------------------------------------------------------------- configuration and method tables


def config_table(summary: pd.DataFrame, tol: float = TIE_TOL) -> pd.DataFrame:
    """Per configuration: mean test score over datasets, mean rank, W/T/L vs the validation-selected
    full / tfidf configurations and vs majority, cost."""
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
            seconds_per_step=("seconds_per_step", "mean"),
            peak_memory_mb=("peak_memory_mb", "mean"),
            estimated_memory_mb=("estimated_memory_mb", "mean"),
        )
        .reset_index()
    )
    per = per.merge(mean_ranks(summary), on=["task", "config"], how="left")
    for against in baselines_in(summary):
        text = wtl_text(summary, summary, against, tol)
        per[f"vs_{against} W/T/L"] = [text.get((t, c), "") for t, c in zip(per["task"], per["config"])]
    return per.sort_values(["task", "mean_rank"], na_position="last").reset_index(drop=True)


def method_table(summary: pd.DataFrame, tol: float = TIE_TOL, points: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model/method: the mean test score of its validation-selected configuration per dataset,
    mean rank among methods, W/T/L vs full / tfidf / majority (significant differences only).
    `points`: method_points(summary), when the caller has them."""
    points = method_points(summary) if points is None else points
    if points.empty:
        return pd.DataFrame()
    per = (
        points.groupby(["task", "unit"], sort=False)
        .agg(mean_score=("mean", "mean"), n_datasets=("dataset", "size"), selected_on=("selected_on", "first"))
        .reset_index()
    )
    per = per.merge(mean_ranks(points, "unit").drop(columns="n_datasets"), on=["task", "unit"], how="left")
    for against in baselines_in(summary):
        text = wtl_text(points.assign(config=points["unit"]), summary, against, tol)
        per[f"vs_{against} W/T/L"] = [text.get((t, u), "") for t, u in zip(per["task"], per["unit"])]
    return per.sort_values(["task", "mean_rank"], na_position="last").reset_index(drop=True)


def rule_text(tol: float = TIE_TOL) -> str:
    return (
        f"W/T/L: a win or loss only when significant at alpha={ALPHA:g} (exact McNemar on the test "
        f"predictions with fewer than {MIN_SEEDS} seeds, a paired t on each row's score where the task keeps one: "
        f"generation's sentence chrF, multilabel's F1; Welch's t on the seed scores otherwise; without "
        f"predictions, |diff| <= {tol:g}, relative for perplexity); baselines selected on validation."
    )
