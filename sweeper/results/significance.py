"""Is a difference between two points real? Paired tests on test predictions, or seed scores.

    outcome = compare_points(point, baseline, task)     # Comparison("win", p_value, "mcnemar")

The rule (docs/results.md):
- both points have at least MIN_SEEDS ok seeds: Welch's t-test on the seed scores;
- otherwise, classification: exact McNemar test on the test predictions of one run of each (the
  lowest seed they share, else each one's lowest seed): the paired test for two classifiers scored
  on the same rows; a task with a per-row score in its predictions (generation: sentence chrF;
  multilabel: each row's F1 of its label set): a paired t-test on those scores (exact match or
  subset accuracy alone would call most differences ties);
- lm points, and runs without saved predictions (schema-1 records): the tolerance rule
  (|difference| <= tol; relative for perplexity), marked "tolerance"; runs whose predictions.parquet
  exists but does not read (truncated): the same rule, marked UNREADABLE, which the report counts.
A difference is a win or a loss only when significant at ALPHA; anything else is a tie.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tasks
from ..records import PREDICTIONS_NAME

ALPHA = 0.05
MIN_SEEDS = 3
TOLERANCE = "tolerance"
UNREADABLE = "tolerance (predictions unreadable)"  # the paired test was skipped: say so, never silently


class UnreadablePredictions(Exception):
    """A run's predictions.parquet exists but cannot be read (truncated, not parquet)."""


@dataclass(frozen=True)
class Comparison:
    outcome: str  # "win", "tie" or "loss" of the point against the baseline
    p_value: float  # NaN under the tolerance rule
    test: str  # "welch", "mcnemar", "paired-t" or "tolerance"


@dataclass(frozen=True)
class Side:
    """What a comparison needs of one point: seed scores and run folders (both in seed order), or a
    constant prediction (the majority baseline)."""

    mean: float
    scores: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    run_dirs: tuple[str, ...] = ()
    constant: int | None = None


def compare_points(point: Side, baseline: Side, higher_is_better: bool, tol: float, alpha: float = ALPHA) -> Comparison:
    return compare_many([(point, baseline, higher_is_better)], tol, alpha)[0]


def compare_many(pairs: list[tuple[Side, Side, bool]], tol: float, alpha: float = ALPHA) -> list[Comparison]:
    """compare_points over (point, baseline, higher_is_better) pairs; Welch's tests of all of them in
    one vectorised scipy call (a 300-dataset report makes thousands)."""
    welch = welch_many([(point.scores, baseline.scores) for point, baseline, _ in pairs])
    out = []
    for (point, baseline, higher), p in zip(pairs, welch):
        if not math.isnan(p):
            out.append(_decide(point.mean - baseline.mean, p, alpha, higher, "welch"))
        else:
            out.append(_paired_or_tolerance(point, baseline, higher, tol, alpha))
    return out


def _paired_or_tolerance(point: Side, baseline: Side, higher_is_better: bool, tol: float, alpha: float) -> Comparison:
    try:
        pair = paired_correct(point, baseline)
    except UnreadablePredictions:
        return Comparison(tolerance_outcome(point.mean, baseline.mean, higher_is_better, tol), float("nan"), UNREADABLE)
    if pair is not None:
        a, b = pair
        if a.dtype == bool:
            return _decide(float(a.mean() - b.mean()), mcnemar_p(a, b), alpha, True, "mcnemar")
        return _decide(float(a.mean() - b.mean()), paired_t_p(a, b), alpha, True, "paired-t")
    return Comparison(tolerance_outcome(point.mean, baseline.mean, higher_is_better, tol), float("nan"), TOLERANCE)


def tolerance_outcome(score: float, baseline: float, higher_is_better: bool, tol: float) -> str:
    """The rule without a test: a tie within tol (absolute; relative to the baseline when lower is
    better, i.e. perplexity), else win or loss by direction."""
    diff = score - baseline
    if abs(diff) <= (tol if higher_is_better else tol * abs(baseline)):
        return "tie"
    return "win" if (diff > 0) == higher_is_better else "loss"


def _decide(diff: float, p: float, alpha: float, higher_is_better: bool, test: str) -> Comparison:
    if p >= alpha or diff == 0:
        return Comparison("tie", p, test)
    return Comparison("win" if (diff > 0) == higher_is_better else "loss", p, test)


def welch_p(a, b) -> float:
    """Two-sided Welch t-test p-value; NaN below MIN_SEEDS a side and when neither side varies."""
    return welch_many([(a, b)])[0]


def welch_many(pairs: list[tuple]) -> np.ndarray:
    """Welch's two-sided p-value of each (scores, scores) pair with at least MIN_SEEDS on both sides
    (scipy's ttest_ind_from_stats, vectorised); NaN for the others and where neither side varies."""
    from scipy import stats

    out = np.full(len(pairs), np.nan)
    tested = [i for i, (a, b) in enumerate(pairs) if len(a) >= MIN_SEEDS and len(b) >= MIN_SEEDS]
    if not tested:
        return out
    a_stats = np.array([_moments(pairs[i][0]) for i in tested])
    b_stats = np.array([_moments(pairs[i][1]) for i in tested])
    varies = np.array([np.ptp(pairs[i][0]) > 0 or np.ptp(pairs[i][1]) > 0 for i in tested])  # std of equal
    # values can come out 1e-16, not 0: Welch would then call any difference between constants significant
    with np.errstate(divide="ignore", invalid="ignore"):
        p = stats.ttest_ind_from_stats(*a_stats.T, *b_stats.T, equal_var=False).pvalue
    out[tested] = np.where(varies, p, np.nan)
    return out


def _moments(scores) -> tuple[float, float, int]:
    values = np.asarray(scores, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)), len(values)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact (binomial) McNemar test on paired correctness: only rows where exactly one is right count."""
    from scipy import stats

    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_t_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired t-test p-value on per-row scores; 1 when no row differs."""
    from scipy import stats

    if np.array_equal(a, b):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def paired_correct(point: Side, baseline: Side) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row correctness (bool) of one run of each side on the same test rows, the per-row scores
    (float) of a task that saves them (sentence chrF, a row's F1), or None without predictions."""
    run_a, run_b = _pick_runs(point, baseline)
    a = load_predictions(run_a) if run_a else None
    if a is None:
        return None
    if baseline.constant is not None:
        return a["pred"] == a["label"], a["label"] == baseline.constant
    b = load_predictions(run_b) if run_b else None
    if b is None or len(a["label"]) != len(b["label"]) or not np.array_equal(a["label"], b["label"]):
        return None  # not the same rows (a different eval_size): no paired test
    for column in row_score_columns():
        if column in a and column in b:
            return a[column], b[column]
    return a["pred"] == a["label"], b["pred"] == b["label"]


def row_score_columns() -> list[str]:
    """The predictions columns that hold a per-row score (sweeper.tasks: Task.row_score)."""
    return [task.row_score for task in tasks.all_tasks() if task.row_score]


def _pick_runs(point: Side, baseline: Side) -> tuple[str | None, str | None]:
    shared = sorted(set(point.seeds) & set(baseline.seeds))
    if shared:
        return point.run_dirs[point.seeds.index(shared[0])], baseline.run_dirs[baseline.seeds.index(shared[0])]
    return (point.run_dirs[0] if point.run_dirs else None), (baseline.run_dirs[0] if baseline.run_dirs else None)


def load_predictions(run_dir: str) -> dict[str, np.ndarray] | None:
    """A run's test labels and predictions, None without predictions.parquet; UnreadablePredictions
    when the file is there but does not read."""
    path = Path(run_dir) / PREDICTIONS_NAME
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UnreadablePredictions(f"{path}: {error}") from None
    try:
        return _read_predictions(str(path), mtime)  # a re-run point is read again
    except Exception as error:  # noqa: BLE001  pyarrow raises many types for a broken file
        raise UnreadablePredictions(f"{path}: {type(error).__name__}") from None


@lru_cache(maxsize=8192)
def _read_predictions(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    frame = pd.read_parquet(path)
    if "label" not in frame or "pred" not in frame:
        raise KeyError(f"{path} has no label / pred columns")
    return {c: frame[c].to_numpy() for c in ("label", "pred", *row_score_columns()) if c in frame}
