"""Conclusions across datasets: does method A beat method B over N datasets?

    study = across_datasets(method_points(summary), task="classification")
    study.table        # per method: mean score, mean rank, p-values vs the best / full / tfidf (Holm)
    study.friedman     # Friedman's chi-square over all methods (k >= 3), or None
    study.pairwise     # every pair: Wilcoxon signed-rank, Holm-adjusted over the pairs

The protocol of Demšar (2006) and Benavoli et al. (2016), on each dataset's validation-selected
configuration of each method (tables.method_points), scored on test:
- a block is a dataset; only datasets where every compared method has a score take part (the
  tests are paired); a method that covers few datasets is left out rather than shrinking N for all;
- Friedman's test over the k methods (scipy), then every pair by the Wilcoxon signed-rank test on
  the per-dataset scores (scipy), p-values adjusted with Holm's step-down (statsmodels) within each
  family of comparisons: all pairs; each method vs the best-ranked; each method vs full
  fine-tuning of its own model; each method vs tfidf;
- ranks: 1 = best on a dataset (ties share the average rank), averaged over the datasets.
The critical-difference diagram (plots.cd_diagram) links methods whose pairwise difference is not
significant after Holm (scikit-posthocs draws it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import tasks
from .significance import ALPHA

ALL = "all datasets"  # the scope of a task's study over every dataset (the others: "family <name>")
MIN_DATASETS = 5  # below this the report tests nothing and says so (Friedman's chi-square needs blocks)
REFERENCES = ("best", "full", "tfidf")  # each method is also compared with these (one Holm family each)


@dataclass
class Study:
    """The across-dataset analysis of one task (and one family of datasets, or all of them)."""

    task: str
    scope: str  # "all datasets" or "family <name>"
    scores: pd.DataFrame  # dataset x unit test scores, complete blocks only
    left_out: list[str] = field(default_factory=list)  # units with too few datasets to pair
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    pairwise: pd.DataFrame = field(default_factory=pd.DataFrame)
    friedman: tuple[float, float] | None = None  # (chi-square, p)

    @property
    def n_datasets(self) -> int:
        return len(self.scores)

    @property
    def diagram_file(self) -> str:
        """Its critical-difference diagram: cd_<task>.png, or cd_<task>_<family>.png."""
        family = self.scope.removeprefix("family ") if self.scope != ALL else None
        return f"cd_{self.task}" + (f"_{family}" if family else "") + ".png"

    @property
    def ranks(self) -> pd.Series:
        """Mean rank per unit, best first."""
        if not len(self.table):
            return pd.Series(dtype=float)
        return self.table.set_index("unit")["mean_rank"].dropna().sort_values()  # left-out units have none

    def p_matrix(self) -> pd.DataFrame:
        """unit x unit Holm-adjusted pairwise p-values (1 on the diagonal): the CD diagram's input."""
        units = list(self.scores.columns)
        matrix = pd.DataFrame(1.0, index=units, columns=units)
        for row in self.pairwise.itertuples(index=False):
            matrix.loc[row.a, row.b] = matrix.loc[row.b, row.a] = row.p_holm
        return matrix

    def verdict(self) -> str:
        """One sentence: how many datasets, the Friedman test, and which pairs differ."""
        if self.n_datasets < MIN_DATASETS:
            return (
                f"{self.task}, {self.scope}: {self.n_datasets} dataset(s) with every method scored; "
                f"rank tests need at least {MIN_DATASETS}: no conclusion across datasets."
            )
        text = f"{self.task}, {self.scope}: N = {self.n_datasets} datasets, k = {self.scores.shape[1]} methods"
        if self.friedman is not None:
            chi2, p = self.friedman
            if math.isnan(p):
                text += "; Friedman: every dataset ranks the methods alike (all tied)"
            else:
                verdict = "the methods differ" if p < ALPHA else "no difference detected"
                text += f"; Friedman chi2 = {chi2:.2f}, p = {format_p(p)} ({verdict} at alpha={ALPHA:g})"
        significant = self.pairwise[self.pairwise["p_holm"] < ALPHA] if len(self.pairwise) else self.pairwise
        text += f"; {len(significant)} of {len(self.pairwise)} pairs differ (Wilcoxon signed-rank, Holm)"
        floor = smallest_pair_p(self.n_datasets, len(self.pairwise))
        if len(self.pairwise) and floor >= ALPHA:
            text += (f" - with {self.n_datasets} datasets no pair can: the smallest Wilcoxon p after Holm is "
                     f"{format_p(floor)}; more datasets are needed")  # fmt: skip
        if self.left_out:
            text += f"; left out (too few datasets to pair): {', '.join(self.left_out)}"
        return text + "."


def smallest_pair_p(n_datasets: int, n_pairs: int) -> float:
    """The smallest Holm-adjusted p any pair can get: the exact two-sided Wilcoxon signed-rank test
    on N untied differences is at least 2 / 2^N, and Holm multiplies the smallest p by the number
    of pairs."""
    return min(1.0, 2.0 / 2**n_datasets * max(n_pairs, 1))


def format_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


# ---------------------------------------------------------------- building a study


def score_matrix(points: pd.DataFrame, unit: str = "unit") -> pd.DataFrame:
    """dataset x unit test scores (NaN where a method has no score on a dataset)."""
    table = points.pivot_table(index="dataset", columns=unit, values="mean", aggfunc="first")
    table.columns.name = None
    return table


def complete_blocks(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The datasets where every unit has a score; units that would leave fewer than half the
    datasets are dropped first (fewest scores first), so one sparse method does not cut N for all."""
    left_out = []
    scores = scores.dropna(how="all")
    while scores.shape[1] > 2 and scores.dropna().shape[0] < len(scores) / 2:
        sparsest = scores.notna().sum().idxmin()
        left_out.append(sparsest)
        scores = scores.drop(columns=sparsest).dropna(how="all")
    return scores.dropna(), left_out


def rank_matrix(scores: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """1 = best on a dataset; ties share the average rank."""
    return scores.rank(axis=1, ascending=not higher_is_better, method="average")


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired scores (scipy); 1 when no pair differs."""
    from scipy import stats

    if np.allclose(a, b, rtol=0, atol=0):
        return 1.0
    return float(stats.wilcoxon(a, b).pvalue)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (statsmodels) of one family of p-values."""
    from statsmodels.stats.multitest import multipletests

    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, alpha=ALPHA, method="holm")[1]]


def across_datasets(points: pd.DataFrame, task: str, scope: str = ALL) -> Study:
    """The study of one task over the datasets of `points` (tables.method_points rows)."""
    higher = tasks.get(task).higher_is_better
    scores, left_out = complete_blocks(score_matrix(points[points["task"] == task]))
    study = Study(task, scope, scores, left_out)
    if scores.shape[1] < 2 or len(scores) < MIN_DATASETS:
        study.table = _unit_table(points, task, scores, higher)
        return study
    if scores.shape[1] >= 3:
        from scipy import stats

        result = stats.friedmanchisquare(*(scores[c].to_numpy() for c in scores.columns))
        study.friedman = (float(result.statistic), float(result.pvalue))
    study.pairwise = _pairwise(scores, higher)
    study.table = _unit_table(points, task, scores, higher, study.pairwise)
    return study


def _pairwise(scores: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Every pair of units: Wilcoxon on the per-dataset scores, Holm over all pairs."""
    units = list(scores.columns)
    rows = []
    for i, a in enumerate(units):
        for b in units[i + 1 :]:
            diff = scores[a] - scores[b]
            better = a if (diff.median() > 0) == higher else b
            rows.append({"a": a, "b": b, "n": len(scores), "median_diff": float(diff.median()),
                         "p": wilcoxon_p(scores[a].to_numpy(), scores[b].to_numpy()),
                         "better": better if diff.median() != 0 else ""})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["a", "b", "n", "median_diff", "p", "better"])
    frame["p_holm"] = holm(frame["p"].tolist())
    return frame


def _unit_table(points, task: str, scores: pd.DataFrame, higher: bool, pairwise=None) -> pd.DataFrame:
    """Per unit: mean score and datasets over all its points, mean rank over the complete blocks,
    and the Holm-adjusted p-value against each reference."""
    sub = points[points["task"] == task]
    per = sub.groupby("unit", sort=False).agg(mean_score=("mean", "mean"), n_datasets=("dataset", "size"))
    ranks = rank_matrix(scores, higher).mean() if len(scores) else pd.Series(dtype=float)
    per["mean_rank"] = ranks.reindex(per.index)
    if pairwise is not None and len(pairwise):
        p_pair = {frozenset((r.a, r.b)): r.p for r in pairwise.itertuples(index=False)}
        for reference in REFERENCES:
            per[f"p_vs_{reference}"] = _against(per.index, reference, ranks, p_pair)
    per = per.reset_index().sort_values("mean_rank", na_position="last", kind="stable")
    return per.reset_index(drop=True)


def reference_of(unit: str, reference: str, ranks: pd.Series) -> str | None:
    """The unit a unit is compared with: the best-ranked one, full fine-tuning of its own model,
    or the tfidf baseline (None where the sweep has none, or for the reference itself)."""
    if reference == "best":
        return ranks.idxmin() if len(ranks) else None
    model = unit.split("/", 1)[0]
    return f"{model}/full" if reference == "full" else "none/tfidf"


def _against(units, reference: str, ranks: pd.Series, p_pair: dict) -> list[float]:
    """Holm-adjusted p-values of each unit vs its reference: one family per reference kind."""
    raw = {}
    for unit in units:
        other = reference_of(unit, reference, ranks)
        if other is not None and other != unit and frozenset((unit, other)) in p_pair:
            raw[unit] = p_pair[frozenset((unit, other))]
    adjusted = dict(zip(raw, holm(list(raw.values()))))
    return [adjusted.get(unit, float("nan")) for unit in units]


def studies(points: pd.DataFrame, families: pd.Series | None = None) -> list[Study]:
    """One study per task over all datasets, then one per dataset family with enough datasets
    (`families`: dataset -> family)."""
    out = []
    for task in tasks.all_tasks():
        sub = points[points["task"] == task.name]
        if sub.empty:
            continue
        out.append(across_datasets(sub, task.name))
        if families is None:
            continue
        family_of = sub["dataset"].map(families)
        if family_of.nunique() < 2:
            continue  # one family: the study above is that family's
        for family in sorted(family_of.dropna().unique()):
            members = sub[family_of == family]
            if members["dataset"].nunique() >= MIN_DATASETS:
                out.append(across_datasets(members, task.name, f"family {family}"))
    return out
